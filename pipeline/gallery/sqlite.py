"""The SQLite gallery backend (the embedded default): one file of identities, templates, centroids and
calibration.

Schema-versioned (``PRAGMA user_version``), mode 0600, and every change is one transaction so a
crash (even SIGKILL) leaves either the old or the new gallery. It also holds the embedding cache
of its source photos, so rebuilding only embeds new files and removing a person erases them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

from pipeline.gallery.cache import SCHEMA as CACHE_SCHEMA
from pipeline.gallery.cache import EmbeddingCache
from pipeline.gallery.store import Gallery, GalleryError, Identity, blob, is_url, register_backend
from pipeline.private_files import PRIVATE_MODE, tighten

SCHEMA_VERSION = 2  # 2: negatives ("not this person", pipeline/gallery/negatives.py)
APP_ID = 0x46535447  # "FSTG": marks the file as a facestream gallery

GALLERY_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    centroid BLOB NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    vec BLOB NOT NULL,
    prob REAL,
    face_px REAL,
    blur REAL,
    outlier INTEGER NOT NULL DEFAULT 0,
    added REAL NOT NULL
);
CREATE INDEX templates_identity ON templates(identity_id);
CREATE TABLE sources (
    identity TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (identity, sha256)
);
"""
# By name, like sources: an identity re-enrolled (its row replaced) keeps its negatives.
NEGATIVES_SCHEMA = """
CREATE TABLE IF NOT EXISTS negatives (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL,
    vec BLOB NOT NULL,
    source TEXT NOT NULL,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS negatives_identity ON negatives(identity);
"""


SQLITE_MAGIC = b"SQLite format 3\x00"
REQUIRED_TABLES = frozenset({"meta", "identities", "templates", "sources", "faces", "negatives"})
SIDE_FILES = ("-journal", "-wal", "-shm")


def _check_header(path: Path) -> None:
    """Refuse what SQLite would misreport (a folder, an unreadable, empty or non-SQLite file) by reading
    the 100-byte SQLite header first."""
    if path.is_dir():
        raise GalleryError(f"gallery {path} is a directory, not a gallery file")
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        raise GalleryError(f"gallery {path} does not exist") from None
    except OSError as exc:
        raise GalleryError(f"cannot read gallery {path}: {exc.strerror or exc}") from None
    if not head:
        raise GalleryError(f"gallery {path} is an empty file (0 bytes), not a facestream gallery")
    if not head.startswith(SQLITE_MAGIC):
        raise GalleryError(f"{path} is not a facestream gallery (not an SQLite database)")
    if len(head) < 100:
        raise GalleryError(f"{path} is not a facestream gallery (truncated SQLite file, {len(head)} bytes)")


def _tighten(path: Path) -> None:
    """Mode 0600 for the gallery and any SQLite side file next to it (SQLite gives new side files the
    database file's mode, so tightening the database first covers the ones it creates later)."""
    tighten(path)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            tighten(side)


def _vec(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32).copy()


def _insert_person(cur: sqlite3.Connection, p: Identity, now: float) -> None:
    """``p`` with its templates in order, replacing a same-named identity (inside the caller's transaction)."""
    cur.execute("DELETE FROM identities WHERE name = ?", (p.name,))
    iid = cur.execute("INSERT INTO identities(name, centroid, created, updated) VALUES (?, ?, ?, ?)",
                      (p.name, blob(p.centroid), now, now)).lastrowid
    cur.executemany(
        "INSERT INTO templates(identity_id, sha256, path, vec, prob, face_px, blur, outlier, added) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        p.template_rows(iid, now))


class SqliteGallery(Gallery):
    """A gallery file; reads are cheap, writes are transactions."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self.conn.execute("PRAGMA foreign_keys = ON")
        # Erasing a person overwrites their rows' bytes: a deleted name or template is not left in free pages.
        self.conn.execute("PRAGMA secure_delete = ON")

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, model_id: str, dim: int) -> SqliteGallery:  # type: ignore[override]
        """Create a new gallery file, or open an existing one built with the same model."""
        path = Path(path)
        if path.exists():
            return cls.open(path, model_id)
        if not path.parent.is_dir():
            raise GalleryError(f"cannot create gallery {path}: folder {path.parent} does not exist")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
        os.close(fd)
        now = time.time()
        meta = {"model_id": model_id, "dim": str(dim), "created": str(now), "updated": str(now), "version": "0",
                "threshold": "null", "margin": "0", "calibration": "null"}
        values = ",".join(f"('{k}', '{v}')" for k, v in meta.items())
        conn = sqlite3.connect(str(path))
        try:
            # One script, one transaction: the application id that marks a gallery lands last.
            conn.executescript(f"BEGIN; {GALLERY_SCHEMA} {NEGATIVES_SCHEMA} {CACHE_SCHEMA} INSERT INTO meta(key, "
                               f"value) VALUES {values}; PRAGMA user_version = {SCHEMA_VERSION}; "
                               f"PRAGMA application_id = {APP_ID}; COMMIT;")
        except sqlite3.Error:
            conn.close()
            path.unlink(missing_ok=True)
            raise
        g = cls(path, conn)
        return g

    @classmethod
    def open(cls, path: str | Path, model_id: str | None = None) -> SqliteGallery:  # type: ignore[override]
        """Open an existing gallery file; ``model_id`` (when given) must match the one it was built with.

        Every way a file can fail to be a usable gallery is a :class:`GalleryError` with one line naming the
        path and the reason, and leaves the file as it was. A gallery that opens is tightened to 0600 (with
        its journal side files) before anything writes to it: a copy or an older version may have left it
        readable by others, and it names people."""
        path = Path(path)
        _check_header(path)
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
        except sqlite3.Error as exc:
            raise GalleryError(f"cannot open gallery {path}: {exc}") from None
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if app != APP_ID:
                raise GalleryError(f"{path} is not a facestream gallery (an SQLite database of another "
                                   "application)")
            if version > SCHEMA_VERSION:
                raise GalleryError(f"gallery {path} has schema {version}, newer than this facestream supports "
                                   f"({SCHEMA_VERSION}); upgrade facestream")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if missing := sorted(REQUIRED_TABLES - tables - ({"negatives"} if version < 2 else set())):
                raise GalleryError(f"gallery {path} is damaged: table(s) {', '.join(missing)} missing")
            built = (conn.execute("SELECT value FROM meta WHERE key = 'model_id'").fetchone() or [""])[0]
            if version < SCHEMA_VERSION:  # schema 1 -> 2: the negatives table, in one transaction
                conn.executescript(f"BEGIN; {NEGATIVES_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise GalleryError(f"gallery {path} is busy (another process is writing it): {exc}") from None
            raise GalleryError(f"{path} is not a facestream gallery (damaged SQLite file: {exc})") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise GalleryError(f"{path} is not a facestream gallery (damaged SQLite file: {exc})") from None
        except GalleryError:
            conn.close()
            raise
        if model_id is not None and built != model_id:
            conn.close()
            raise GalleryError(f"gallery {path} was built with model {built}; this run uses {model_id} "
                               "(pass --model to match, or build a new gallery)")
        _tighten(path)  # only once it is known to be ours: another application's file keeps its mode
        return cls(path, conn)

    def close(self) -> None:
        self.conn.close()

    # ---- metadata ------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def cache(self) -> EmbeddingCache:
        """The embedding cache stored inside this gallery file."""
        return EmbeddingCache.from_connection(self.conn)

    def _touch(self, cur: sqlite3.Connection) -> None:
        cur.execute("UPDATE meta SET value = ? WHERE key = 'updated'", (str(time.time()),))
        cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")

    def set_calibration(self, threshold: float | None, margin: float, figures: dict | None, bump: bool = True) -> None:
        """Store the operating point; ``bump=False`` when it completes a write that already bumped the version."""
        with self.conn as cur:
            cur.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [
                ("threshold", json.dumps(threshold)), ("margin", json.dumps(margin)),
                ("calibration", json.dumps(figures)),
            ])
            if bump:
                self._touch(cur)

    # ---- identities ----------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM identities ORDER BY name")]

    def identities(self) -> list[Identity]:
        """Every identity with its templates, by name, in one query (one query per identity took minutes
        for a gallery of a million: docs/benchmarks.md, "Large galleries")."""
        out: list[Identity] = []
        rows = self.conn.execute(
            "SELECT i.id, i.name, i.centroid, t.vec, t.outlier, t.path, t.sha256, t.prob, t.face_px, t.blur "
            "FROM identities i LEFT JOIN templates t ON t.identity_id = i.id ORDER BY i.name, t.id")
        current, group = None, []
        for r in rows:
            if current is not None and r[0] != current[0]:
                out.append(self._identity(current, group))
                group = []
            current = r
            if r[3] is not None:
                group.append(r)
        if current is not None:
            out.append(self._identity(current, group))
        return out

    def _identity(self, head: tuple, rows: list[tuple]) -> Identity:
        vecs = np.stack([_vec(r[3]) for r in rows]) if rows else np.zeros((0, self.dim), np.float32)
        return Identity(head[1], _vec(head[2]), vecs, np.array([bool(r[4]) for r in rows], dtype=bool),
                        [r[5] for r in rows], [r[6] for r in rows],
                        [{"prob": r[7], "face_px": r[8], "blur": r[9]} for r in rows])

    def sources(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for name, sha in self.conn.execute("SELECT identity, sha256 FROM sources"):
            out.setdefault(name, set()).add(sha)
        return out

    def _write_identities(self, people: list[Identity], keep_others: bool, sources: dict[str, set[str]]) -> None:
        now = time.time()
        with self.conn as cur:
            for name, shas in sources.items():
                cur.executemany("INSERT OR IGNORE INTO sources(identity, sha256) VALUES (?, ?)",
                                [(name, sha) for sha in shas])
            if not keep_others:
                keep = {p.name for p in people}
                gone = [(n,) for (n,) in cur.execute("SELECT name FROM identities") if n not in keep]
                cur.executemany("DELETE FROM identities WHERE name = ?", gone)
                cur.executemany("DELETE FROM negatives WHERE identity = ?", gone)
            for p in people:
                _insert_person(cur, p, now)
            self._touch(cur)

    def remove(self, name: str) -> int:
        """Erase an identity, its templates and the cached embeddings of its photos; returns templates removed."""
        row = self.conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryError(f"no identity named {name!r} in {self.path}")
        templates = [r[0] for r in self.conn.execute("SELECT sha256 FROM templates WHERE identity_id = ?",
                                                     (row[0],))]
        offered = [r[0] for r in self.conn.execute("SELECT sha256 FROM sources WHERE identity = ?", (name,))]
        with self.conn as cur:
            cur.execute("DELETE FROM templates WHERE identity_id = ?", (row[0],))
            cur.execute("DELETE FROM identities WHERE id = ?", (row[0],))
            cur.execute("DELETE FROM sources WHERE identity = ?", (name,))
            cur.execute("DELETE FROM negatives WHERE identity = ?", (name,))
            # A photo shared with another identity keeps its cache row (it is still in use).
            still = {r[0] for r in cur.execute("SELECT sha256 FROM templates UNION SELECT sha256 FROM sources")}
            cur.executemany("DELETE FROM faces WHERE sha256 = ?",
                            [(s,) for s in set(templates) | set(offered) if s not in still])
            self._touch(cur)
        return len(templates)

    def _rename(self, old: str, new: str) -> None:
        with self.conn as cur:
            if cur.execute("SELECT 1 FROM identities WHERE name = ?", (new,)).fetchone():
                raise GalleryError(f"an identity named {new!r} already exists")
            if cur.execute("UPDATE identities SET name = ?, updated = ? WHERE name = ?",
                           (new, time.time(), old)).rowcount == 0:
                raise GalleryError(f"no identity named {old!r} in {self.path}")
            cur.execute("UPDATE sources SET identity = ? WHERE identity = ?", (new, old))
            cur.execute("UPDATE negatives SET identity = ? WHERE identity = ?", (new, old))
            self._touch(cur)

    # ---- corrections ---------------------------------------------------------------------
    def negatives(self) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {}
        for name, vec in self.conn.execute("SELECT identity, vec FROM negatives ORDER BY id"):
            out.setdefault(name, []).append(_vec(vec))
        return {n: np.stack(v) for n, v in out.items()}

    def _store_calibration(self, cur: sqlite3.Connection, figures: dict | None) -> None:
        cur.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [
            ("threshold", json.dumps((figures or {}).get("threshold"))),
            ("margin", json.dumps((figures or {}).get("margin", 0.0))), ("calibration", json.dumps(figures))])

    def add_negative(self, name: str, vec: np.ndarray, source: str, figures: dict | None) -> None:
        with self.conn as cur:
            if not cur.execute("SELECT 1 FROM identities WHERE name = ?", (name,)).fetchone():
                raise GalleryError(f"no identity named {name!r} in {self.path}")
            cur.execute("INSERT INTO negatives(identity, vec, source, added) VALUES (?, ?, ?, ?)",
                        (name, blob(vec), source, time.time()))
            self._store_calibration(cur, figures)
            self._touch(cur)

    def regroup(self, people: list[Identity], drop: list[str], moves: dict[str, str], sources: dict[str, set[str]],
                figures: dict | None) -> None:
        now = time.time()
        with self.conn as cur:  # one transaction: commits at the end, rolls back on any error
            for old, new in moves.items():
                cur.execute("INSERT OR IGNORE INTO sources(identity, sha256) SELECT ?, sha256 FROM sources WHERE "
                            "identity = ?", (new, old))
                cur.execute("DELETE FROM sources WHERE identity = ?", (old,))
                cur.execute("UPDATE negatives SET identity = ? WHERE identity = ?", (new, old))
            cur.executemany("INSERT OR IGNORE INTO sources(identity, sha256) VALUES (?, ?)",
                            [(n, sha) for n, shas in sources.items() for sha in sorted(shas)])
            for name in drop:
                cur.execute("DELETE FROM identities WHERE name = ?", (name,))  # templates by cascade
                cur.execute("DELETE FROM negatives WHERE identity = ?", (name,))
            for p in people:
                _insert_person(cur, p, now)
            self._store_calibration(cur, figures)
            self._touch(cur)

    def counts(self) -> tuple[int, int, int]:
        n_id = self.conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0]
        n_t, n_out = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(outlier), 0) FROM templates").fetchone()
        return int(n_id), int(n_t), int(n_out)


register_backend(lambda location: not is_url(location), SqliteGallery)
