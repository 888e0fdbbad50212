"""The PostgreSQL gallery backend: one gallery per database, shared by every host of a site.

The same tables as the SQLite file (identities, templates, sources, the embedding cache, meta) in the schema
``facestream``, vectors as float32 bytes so a migration round trip is exact. Every write is one transaction
that bumps the revision and sends ``NOTIFY facestream_gallery`` with it: PostgreSQL delivers the notification
only when the transaction commits, so a daemon that follows (``pipeline/gallery/follow.py``) never reads a
half-written gallery. Writers of several hosts are serialised by a transaction-level advisory lock, so the
name rule is checked and applied inside one transaction.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.gallery.cache import CachedFace, EmbeddingCache
from pipeline.gallery.store import Gallery, GalleryError, Identity, blob, register_backend
from pipeline.pg import NOTIFY_CHANNEL, PgError, PgUrl, check_store, connect, create_store, is_pg_url, parse_url

SCHEMA_VERSION = 2  # 2: gallery_negatives ("not this person", pipeline/gallery/negatives.py)
KIND = "gallery"
_WRITE_LOCK = 0x46535457  # "FSTW": one gallery write at a time, across hosts

DDL = """
CREATE TABLE facestream.gallery_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE facestream.gallery_identities (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, centroid BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL);
CREATE TABLE facestream.gallery_templates (
    id BIGSERIAL PRIMARY KEY,
    identity_id BIGINT NOT NULL REFERENCES facestream.gallery_identities(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL, path TEXT NOT NULL, vec BYTEA NOT NULL, prob DOUBLE PRECISION, face_px DOUBLE PRECISION,
    blur DOUBLE PRECISION, outlier BOOLEAN NOT NULL DEFAULT FALSE, added DOUBLE PRECISION NOT NULL);
CREATE INDEX gallery_templates_identity ON facestream.gallery_templates(identity_id);
CREATE TABLE facestream.gallery_sources (identity TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (identity, sha256));
CREATE TABLE facestream.gallery_faces (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, reason TEXT, vec BYTEA, info TEXT);
CREATE INDEX gallery_faces_sha ON facestream.gallery_faces(sha256);
"""
NEGATIVES_DDL = """
CREATE TABLE IF NOT EXISTS facestream.gallery_negatives (
    id BIGSERIAL PRIMARY KEY, identity TEXT NOT NULL, vec BYTEA NOT NULL, source TEXT NOT NULL,
    added DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS gallery_negatives_identity ON facestream.gallery_negatives(identity);
"""
TABLES = ("gallery_meta", "gallery_identities", "gallery_templates", "gallery_sources", "gallery_faces",
          "gallery_negatives")


def _vec(b: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(b), dtype=np.float32).copy()


def _open_conn(url: PgUrl) -> Any:
    try:
        return connect(url, "gallery")
    except PgError as exc:
        raise GalleryError(str(exc)) from None


def _upgrade(conn: Any) -> None:
    """Schema 1 -> 2 (the negatives table), in one transaction under the store lock; nothing for schema 2."""
    with conn.transaction():
        row = conn.execute("SELECT schema_version FROM facestream.stores WHERE kind = %s FOR UPDATE",
                           (KIND,)).fetchone()
        if row is not None and row[0] < SCHEMA_VERSION:
            conn.execute(NEGATIVES_DDL)
            conn.execute("UPDATE facestream.stores SET schema_version = %s WHERE kind = %s", (SCHEMA_VERSION, KIND))


class PgFaceCache:
    """The embedding cache kept with a PostgreSQL gallery (same keys and rows as the SQLite one)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def get(self, sha256: str, context: str) -> CachedFace | None:
        row = self.conn.execute("SELECT reason, vec, info FROM facestream.gallery_faces WHERE key = %s",
                                (EmbeddingCache.key(sha256, context),)).fetchone()
        if row is None:
            return None
        reason, vec, info = row
        return CachedFace(_vec(vec) if vec is not None else None, reason, json.loads(info) if info else {})

    def put_many(self, rows: list[tuple[str, str, CachedFace]]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO facestream.gallery_faces(key, sha256, reason, vec, info) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET sha256 = EXCLUDED.sha256, reason = EXCLUDED.reason, "
                "vec = EXCLUDED.vec, info = EXCLUDED.info",
                [(EmbeddingCache.key(sha, ctx), sha, f.reason, blob(f.vec) if f.vec is not None else None,
                  json.dumps(f.info)) for sha, ctx, f in rows])

    def rows(self) -> Iterator[tuple[str, str, CachedFace]]:
        for key, reason, vec, info in self.conn.execute(
                "SELECT key, reason, vec, info FROM facestream.gallery_faces ORDER BY key"):
            sha, _, ctx = key.partition("|")
            yield sha, ctx, CachedFace(_vec(vec) if vec is not None else None, reason,
                                       json.loads(info) if info else {})


def _insert_person(cur: Any, p: Identity, now: float) -> None:
    """``p`` with its templates in order, replacing a same-named identity (inside the caller's transaction)."""
    cur.execute("DELETE FROM facestream.gallery_identities WHERE name = %s", (p.name,))
    cur.execute("INSERT INTO facestream.gallery_identities(name, centroid, created, updated) VALUES "
                "(%s, %s, %s, %s) RETURNING id", (p.name, blob(p.centroid), now, now))
    iid = cur.fetchone()[0]
    cur.executemany(
        "INSERT INTO facestream.gallery_templates(identity_id, sha256, path, vec, prob, face_px, blur, "
        "outlier, added) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        p.template_rows(iid, now))


class PgChangeFeed:
    """``LISTEN`` on the gallery's channel: :meth:`wait` returns when a write committed (or the timeout
    passed); a lost server raises from it."""

    def __init__(self, url: PgUrl) -> None:
        self.conn = connect(url, "gallery")
        self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def revision(self) -> int:
        row = self.conn.execute("SELECT value FROM facestream.gallery_meta WHERE key = 'revision'").fetchone()
        return int(row[0]) if row else 0

    def wait(self, timeout_s: float) -> bool:
        return any(True for _ in self.conn.notifies(timeout=timeout_s, stop_after=1))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class PgGallery(Gallery):
    """A gallery in a PostgreSQL database; reads are queries, writes are transactions."""

    shared = True

    def __init__(self, url: PgUrl, conn: Any) -> None:
        self.path = url  # type: ignore[assignment]  (a URL without password: has .name and str())
        self.url, self.conn = url, conn

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, location: Any, model_id: str, dim: int) -> PgGallery:
        url = cls._url(location)
        conn = _open_conn(url)
        try:
            now = str(time.time())
            meta = {"model_id": model_id, "dim": str(dim), "created": now, "updated": now, "version": "0",
                    "revision": "0", "threshold": "null", "margin": "0", "calibration": "null"}
            rows = [("INSERT INTO facestream.gallery_meta(key, value) VALUES (%s, %s)", kv) for kv in meta.items()]
            create_store(conn, url, KIND, SCHEMA_VERSION, "gallery", DDL + NEGATIVES_DDL, rows)
        except PgError as exc:
            conn.close()
            raise GalleryError(str(exc)) from None
        except BaseException:
            conn.close()
            raise
        conn.close()
        return cls.open(location, model_id)

    @classmethod
    def open(cls, location: Any, model_id: str | None = None) -> PgGallery:
        url = cls._url(location)
        conn = _open_conn(url)
        try:
            check_store(conn, url, KIND, SCHEMA_VERSION, "gallery", must_exist=True)
            _upgrade(conn)
            present = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'facestream'")}
            if missing := sorted(set(TABLES) - present):
                raise GalleryError(f"gallery {url} is damaged: table(s) {', '.join(missing)} missing")
            row = conn.execute("SELECT value FROM facestream.gallery_meta WHERE key = 'model_id'").fetchone()
        except PgError as exc:
            conn.close()
            raise GalleryError(str(exc)) from None
        except BaseException:
            conn.close()
            raise
        built = row[0] if row else ""
        if model_id is not None and built != model_id:
            conn.close()
            raise GalleryError(f"gallery {url} was built with model {built}; this run uses {model_id} "
                               "(pass --model to match, or build a new gallery)")
        return cls(url, conn)

    @staticmethod
    def _url(location: Any) -> PgUrl:
        if isinstance(location, PgUrl):
            return location
        try:
            return parse_url(str(location), "gallery")
        except PgError as exc:
            raise GalleryError(str(exc)) from None

    @classmethod
    def change_feed(cls, location: Any) -> PgChangeFeed:
        return PgChangeFeed(cls._url(location))

    def close(self) -> None:
        self.conn.close()

    # ---- metadata ------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM facestream.gallery_meta WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def cache(self) -> PgFaceCache:
        return PgFaceCache(self.conn)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._write():
            yield

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """One transaction holding the gallery's write lock; nested calls share it (a savepoint)."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            yield self.conn

    def _touch(self, bump: bool = True) -> None:
        """The revision moves on every write (followers reload); the version, on writes that change who is
        matched or how (events name it)."""
        c = self.conn
        c.execute("UPDATE facestream.gallery_meta SET value = %s WHERE key = 'updated'", (str(time.time()),))
        if bump:
            c.execute("UPDATE facestream.gallery_meta SET value = (value::bigint + 1)::text WHERE key = 'version'")
        rev = c.execute("UPDATE facestream.gallery_meta SET value = (value::bigint + 1)::text WHERE key = "
                        "'revision' RETURNING value").fetchone()[0]
        ver = c.execute("SELECT value FROM facestream.gallery_meta WHERE key = 'version'").fetchone()[0]
        c.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, json.dumps({"revision": int(rev),
                                                                          "version": int(ver)})))

    def set_calibration(self, threshold: float | None, margin: float, figures: dict | None, bump: bool = True) -> None:
        with self._write() as c, c.cursor() as cur:
            cur.executemany("INSERT INTO facestream.gallery_meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO "
                            "UPDATE SET value = EXCLUDED.value", [
                                ("threshold", json.dumps(threshold)), ("margin", json.dumps(margin)),
                                ("calibration", json.dumps(figures))])
            self._touch(bump)

    # ---- identities ----------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM facestream.gallery_identities ORDER BY name")]

    def identities(self) -> list[Identity]:
        from psycopg.pq import TransactionStatus

        outer = self.conn.info.transaction_status != TransactionStatus.IDLE  # inside writing(): already one view
        with self.conn.transaction():  # one snapshot: identities and templates read together
            if not outer:
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            heads = self.conn.execute("SELECT id, name, centroid FROM facestream.gallery_identities ORDER BY name"
                                      ).fetchall()
            rows = self.conn.execute("SELECT identity_id, vec, outlier, path, sha256, prob, face_px, blur FROM "
                                     "facestream.gallery_templates ORDER BY id").fetchall()
        by_id: dict[int, list[tuple]] = {}
        for r in rows:
            by_id.setdefault(r[0], []).append(r[1:])
        out = []
        for iid, name, centroid in heads:
            ts = by_id.get(iid, [])
            vecs = np.stack([_vec(t[0]) for t in ts]) if ts else np.zeros((0, self.dim), np.float32)
            out.append(Identity(name, _vec(centroid), vecs, np.array([bool(t[1]) for t in ts], dtype=bool),
                                [t[2] for t in ts], [t[3] for t in ts],
                                [{"prob": t[4], "face_px": t[5], "blur": t[6]} for t in ts]))
        return out

    def sources(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for name, sha in self.conn.execute("SELECT identity, sha256 FROM facestream.gallery_sources"):
            out.setdefault(name, set()).add(sha)
        return out

    def replace_identities(self, people: list[Identity], keep_others: bool,
                           sources: dict[str, set[str]] | None = None) -> None:
        with self._write():  # the name check and the write in one transaction, one writer at a time
            super().replace_identities(people, keep_others, sources)

    def _write_identities(self, people: list[Identity], keep_others: bool, sources: dict[str, set[str]]) -> None:
        now = time.time()
        with self._write() as c, c.cursor() as cur:
            cur.executemany("INSERT INTO facestream.gallery_sources(identity, sha256) VALUES (%s, %s) ON CONFLICT "
                            "DO NOTHING", [(name, sha) for name, shas in sources.items() for sha in sorted(shas)])
            if not keep_others:
                cur.execute("DELETE FROM facestream.gallery_identities WHERE NOT (name = ANY(%s))",
                            ([p.name for p in people],))
                cur.execute("DELETE FROM facestream.gallery_negatives WHERE NOT (identity = ANY(%s))",
                            ([p.name for p in people],))
            for p in people:
                _insert_person(cur, p, now)
            self._touch()

    def remove(self, name: str) -> int:
        """Every row of the person (identity, templates, offered photos, their cached embeddings unless another
        identity still uses a photo) in one transaction."""
        with self._write() as c:
            row = c.execute("SELECT id FROM facestream.gallery_identities WHERE name = %s", (name,)).fetchone()
            if row is None:
                raise GalleryError(f"no identity named {name!r} in {self.url}")
            templates = [r[0] for r in c.execute("SELECT sha256 FROM facestream.gallery_templates WHERE "
                                                 "identity_id = %s", (row[0],))]
            offered = [r[0] for r in c.execute("SELECT sha256 FROM facestream.gallery_sources WHERE identity = %s",
                                               (name,))]
            c.execute("DELETE FROM facestream.gallery_templates WHERE identity_id = %s", (row[0],))
            c.execute("DELETE FROM facestream.gallery_identities WHERE id = %s", (row[0],))
            c.execute("DELETE FROM facestream.gallery_sources WHERE identity = %s", (name,))
            c.execute("DELETE FROM facestream.gallery_negatives WHERE identity = %s", (name,))
            still = {r[0] for r in c.execute("SELECT sha256 FROM facestream.gallery_templates UNION SELECT sha256 "
                                             "FROM facestream.gallery_sources")}
            c.execute("DELETE FROM facestream.gallery_faces WHERE sha256 = ANY(%s)",
                      (sorted((set(templates) | set(offered)) - still),))
            self._touch()
        return len(templates)

    def rename(self, old: str, new: str) -> str:
        with self._write():
            return super().rename(old, new)

    def _rename(self, old: str, new: str) -> None:
        with self._write() as c:
            if c.execute("SELECT 1 FROM facestream.gallery_identities WHERE name = %s", (new,)).fetchone():
                raise GalleryError(f"an identity named {new!r} already exists")
            if c.execute("UPDATE facestream.gallery_identities SET name = %s, updated = %s WHERE name = %s",
                         (new, time.time(), old)).rowcount == 0:
                raise GalleryError(f"no identity named {old!r} in {self.url}")
            c.execute("UPDATE facestream.gallery_sources SET identity = %s WHERE identity = %s", (new, old))
            c.execute("UPDATE facestream.gallery_negatives SET identity = %s WHERE identity = %s", (new, old))
            self._touch()

    # ---- corrections ---------------------------------------------------------------------
    def negatives(self) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {}
        for name, vec in self.conn.execute("SELECT identity, vec FROM facestream.gallery_negatives ORDER BY id"):
            out.setdefault(name, []).append(_vec(vec))
        return {n: np.stack(v) for n, v in out.items()}

    def _store_calibration(self, cur: Any, figures: dict | None) -> None:
        cur.executemany("INSERT INTO facestream.gallery_meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO "
                        "UPDATE SET value = EXCLUDED.value", [
                            ("threshold", json.dumps((figures or {}).get("threshold"))),
                            ("margin", json.dumps((figures or {}).get("margin", 0.0))),
                            ("calibration", json.dumps(figures))])

    def add_negative(self, name: str, vec: np.ndarray, source: str, figures: dict | None) -> None:
        with self._write() as c, c.cursor() as cur:
            if not cur.execute("SELECT 1 FROM facestream.gallery_identities WHERE name = %s", (name,)).fetchone():
                raise GalleryError(f"no identity named {name!r} in {self.url}")
            cur.execute("INSERT INTO facestream.gallery_negatives(identity, vec, source, added) VALUES "
                        "(%s, %s, %s, %s)", (name, blob(vec), source, time.time()))
            self._store_calibration(cur, figures)
            self._touch()

    def regroup(self, people: list[Identity], drop: list[str], moves: dict[str, str], sources: dict[str, set[str]],
                figures: dict | None) -> None:
        now = time.time()
        with self._write() as c, c.cursor() as cur:
            for old, new in moves.items():
                cur.execute("INSERT INTO facestream.gallery_sources(identity, sha256) SELECT %s, sha256 FROM "
                            "facestream.gallery_sources WHERE identity = %s ON CONFLICT DO NOTHING", (new, old))
                cur.execute("DELETE FROM facestream.gallery_sources WHERE identity = %s", (old,))
                cur.execute("UPDATE facestream.gallery_negatives SET identity = %s WHERE identity = %s", (new, old))
            cur.executemany("INSERT INTO facestream.gallery_sources(identity, sha256) VALUES (%s, %s) ON CONFLICT "
                            "DO NOTHING", [(n, sha) for n, shas in sources.items() for sha in sorted(shas)])
            for name in drop:
                cur.execute("DELETE FROM facestream.gallery_identities WHERE name = %s", (name,))
                cur.execute("DELETE FROM facestream.gallery_negatives WHERE identity = %s", (name,))
            for p in people:
                _insert_person(cur, p, now)
            self._store_calibration(cur, figures)
            self._touch()

    def counts(self) -> tuple[int, int, int]:
        n_id = self.conn.execute("SELECT count(*) FROM facestream.gallery_identities").fetchone()[0]
        n_t, n_out = self.conn.execute("SELECT count(*), count(*) FILTER (WHERE outlier) FROM "
                                       "facestream.gallery_templates").fetchone()
        return int(n_id), int(n_t), int(n_out)


register_backend(is_pg_url, PgGallery)
