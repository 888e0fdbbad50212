"""Unknown visitors: the best face and embedding of each track that ended unknown, grouped into visitors.

An appearance is one unknown track: its camera, when it was seen, its embedding and (while it is among
its visitor's best ``max_faces``) its face as JPEG. A visitor is the appearances whose embeddings
are within the same-person threshold of its centroid (the unit mean of its appearances), grouped
incrementally: a new appearance joins the nearest visitor when the cosine similarity reaches the
threshold, else it starts a new one. Counts, cameras and first/last seen are read from the appearances,
so expiry (appearances last seen ``keep_days`` ago) and erasure keep them right.

The embedded backend is one SQLite file beside the gallery: 0600, its own application id, and
``secure_delete`` so an erased or expired face is overwritten, not left in a free page. ``open_unknowns``
picks the backend from the location (only SQLite so far).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.private_files import check_output, open_private

APP_ID = 0x46535455  # "FSTU": marks the file as a facestream unknown-visitors store
SCHEMA_VERSION = 1
SIDE_FILES = ("-journal", "-wal", "-shm")
SCHEMA = """
CREATE TABLE IF NOT EXISTS visitors (id TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS appearances (
    id INTEGER PRIMARY KEY,
    visitor TEXT NOT NULL REFERENCES visitors(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    vec BLOB NOT NULL,
    quality REAL NOT NULL,
    jpeg BLOB
);
CREATE INDEX IF NOT EXISTS appearances_visitor ON appearances(visitor);
"""


class UnknownStore(Protocol):
    """What the live part and the HTTP API need of a visitors store."""

    def assign(self, vec: np.ndarray, threshold: float, source: str, seen: float, quality: float,
               jpeg: bytes | None) -> tuple[str, int, int]:
        """Record an appearance with the nearest visitor at or above ``threshold`` (else a new one):
        (visitor id, appearance id, the visitor's appearances with this one)."""

    def update(self, appearance: int, vec: np.ndarray, last_seen: float, quality: float, jpeg: bytes | None) -> None:
        """The appearance's final embedding and best face (its track ended); its visitor is unchanged."""

    def visitors(self) -> list[dict[str, Any]]: ...

    def visitor(self, visitor_id: str) -> dict[str, Any] | None: ...

    def face(self, visitor_id: str, appearance: int) -> bytes | None: ...

    def faces(self, visitor_id: str) -> list[tuple[int, bytes]]: ...

    def delete(self, visitor_id: str) -> bool:
        """Erase a visitor, every appearance and face of theirs overwritten; False when there was none."""

    def matching(self, vec: np.ndarray, threshold: float) -> list[str]:
        """The visitors whose centroid is within ``threshold`` of ``vec`` (an erased person's faces)."""

    def expire(self, before: float) -> int:
        """Erase appearances last seen before the epoch ``before`` (and visitors left with none); how many."""

    def close(self) -> None: ...


def default_location(gallery: Path) -> Path:
    return gallery.with_name(gallery.name + ".unknowns.db")


def open_unknowns(location: str | Path, max_faces: int = 5) -> UnknownStore:
    from pipeline.pg import is_pg_url

    if is_pg_url(location):
        raise ValueError("unknowns.path: unknown visitors are kept in an SQLite file, not in PostgreSQL (yet)")
    return SqliteUnknowns(Path(location), max_faces)


def _blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


class SqliteUnknowns:
    """One file, one connection shared by the events thread and the API's threads under a lock; the visitors'
    embedding sums are kept in memory (rebuilt from the file on open), so an assignment reads no rows."""

    def __init__(self, path: Path, max_faces: int = 5) -> None:
        self.path, self.max_faces = check_output(path, "unknowns.path"), max_faces
        self._check_foreign()
        open_private(path, "a").close()  # 0600 before SQLite writes a byte: it holds faces
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=10.0)
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA secure_delete = ON")
            self._db.executescript(f"BEGIN; {SCHEMA} PRAGMA application_id = {APP_ID}; "
                                   f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"unknowns.path: {path} is not an unknown-visitors store: {exc}") from None
        self._sums: dict[str, np.ndarray] = {}
        for visitor, vec in self._db.execute("SELECT visitor, vec FROM appearances"):
            v = np.frombuffer(vec, np.float32)
            self._sums[visitor] = self._sums.get(visitor, 0) + v

    def _check_foreign(self) -> None:
        """A gallery, a book or another application's database is never taken for a visitors store."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise ValueError(f"unknowns.path: {self.path} is not an unknown-visitors store (not SQLite)")
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
        finally:
            conn.close()
        if app != APP_ID:
            raise ValueError(f"unknowns.path: {self.path} is not an unknown-visitors store (another application's "
                             "database)")

    # ---- writes (the events thread) -------------------------------------------------------------------
    def _nearest(self, vec: np.ndarray) -> tuple[str | None, float]:
        ids = [i for i, total in self._sums.items() if total.shape == vec.shape]  # a rebuilt gallery's other model
        if not ids:
            return None, -1.0
        sims = np.stack([_unit(self._sums[i]) for i in ids]) @ vec
        k = int(np.argmax(sims))
        return ids[k], float(sims[k])

    def assign(self, vec: np.ndarray, threshold: float, source: str, seen: float, quality: float,
               jpeg: bytes | None) -> tuple[str, int, int]:
        vec = _unit(np.asarray(vec, np.float32))
        with self._lock:
            visitor, sim = self._nearest(vec)
            with self._db:
                if visitor is None or sim < threshold:
                    visitor = secrets.token_hex(4)
                    self._db.execute("INSERT INTO visitors VALUES (?, ?)", (visitor, seen))
                cur = self._db.execute("INSERT INTO appearances (visitor, source, first_seen, last_seen, vec, "
                                       "quality, jpeg) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                       (visitor, source, seen, seen, _blob(vec), quality, jpeg))
                self._keep_best(visitor)
                count = self._db.execute("SELECT COUNT(*) FROM appearances WHERE visitor = ?", (visitor,)).fetchone()
            self._sums[visitor] = self._sums.get(visitor, 0) + vec
            return visitor, int(cur.lastrowid or 0), int(count[0])

    def update(self, appearance: int, vec: np.ndarray, last_seen: float, quality: float, jpeg: bytes | None) -> None:
        vec = _unit(np.asarray(vec, np.float32))
        with self._lock:
            row = self._db.execute("SELECT visitor, vec FROM appearances WHERE id = ?", (appearance,)).fetchone()
            if row is None:  # erased or enrolled meanwhile
                return
            visitor, old = row
            with self._db:
                self._db.execute("UPDATE appearances SET vec = ?, last_seen = ?, quality = ?, jpeg = ? WHERE id = ?",
                                 (_blob(vec), last_seen, quality, jpeg, appearance))
                self._keep_best(visitor)
            self._sums[visitor] = self._sums[visitor] - np.frombuffer(old, np.float32) + vec

    def _keep_best(self, visitor: str) -> None:
        """Only the visitor's ``max_faces`` best faces keep their JPEG (the others' bytes are overwritten)."""
        self._db.execute("UPDATE appearances SET jpeg = NULL WHERE visitor = ? AND jpeg IS NOT NULL AND id NOT IN "
                         "(SELECT id FROM appearances WHERE visitor = ? AND jpeg IS NOT NULL "
                         "ORDER BY quality DESC, id LIMIT ?)", (visitor, visitor, self.max_faces))

    # ---- reads (the API) ------------------------------------------------------------------------------
    def _summary(self, visitor: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT COUNT(*), MIN(first_seen), MAX(last_seen), GROUP_CONCAT(DISTINCT source) "
                               "FROM appearances WHERE visitor = ?", (visitor,)).fetchone()
        if not row or not row[0]:
            return None
        faces = [r[0] for r in self._db.execute("SELECT id FROM appearances WHERE visitor = ? AND jpeg IS NOT NULL "
                                                "ORDER BY quality DESC, id", (visitor,))]
        return {"id": visitor, "count": row[0], "first_seen": round(row[1], 3), "last_seen": round(row[2], 3),
                "cameras": sorted(row[3].split(",")), "faces": faces}

    def visitors(self) -> list[dict[str, Any]]:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM visitors ORDER BY created")]
            out = [self._summary(i) for i in ids]
        return sorted((v for v in out if v), key=lambda v: -v["last_seen"])

    def visitor(self, visitor_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._summary(visitor_id)

    def face(self, visitor_id: str, appearance: int) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT jpeg FROM appearances WHERE id = ? AND visitor = ?",
                                   (appearance, visitor_id)).fetchone()
        return row[0] if row else None

    def faces(self, visitor_id: str) -> list[tuple[int, bytes]]:
        with self._lock:
            return list(self._db.execute("SELECT id, jpeg FROM appearances WHERE visitor = ? AND jpeg IS NOT NULL "
                                         "ORDER BY quality DESC, id", (visitor_id,)))

    # ---- erasure ------------------------------------------------------------------------------------------
    def delete(self, visitor_id: str) -> bool:
        with self._lock:
            with self._db:
                self._db.execute("DELETE FROM appearances WHERE visitor = ?", (visitor_id,))
                gone = self._db.execute("DELETE FROM visitors WHERE id = ?", (visitor_id,)).rowcount
            self._sums.pop(visitor_id, None)
        return bool(gone)

    def matching(self, vec: np.ndarray, threshold: float) -> list[str]:
        vec = _unit(np.asarray(vec, np.float32))
        with self._lock:
            return [i for i, total in self._sums.items()
                    if total.shape == vec.shape and float(_unit(total) @ vec) >= threshold]

    def expire(self, before: float) -> int:
        with self._lock:
            with self._db:
                n = self._db.execute("DELETE FROM appearances WHERE last_seen < ?", (before,)).rowcount
                self._db.execute("DELETE FROM visitors WHERE id NOT IN (SELECT visitor FROM appearances)")
            if n:
                self._sums = {}
                for visitor, vec in self._db.execute("SELECT visitor, vec FROM appearances"):
                    self._sums[visitor] = self._sums.get(visitor, 0) + np.frombuffer(vec, np.float32)
        return n

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

