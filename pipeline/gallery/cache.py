"""Embedding cache: one SQLite file keyed by file hash + detector + selection + model id.

Failures (no face, bad file) are cached too, so a rerun over a large folder only touches new
files. Writes are batched in transactions; a crash loses at most the current batch.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.private_files import PRIVATE_MODE, tighten

SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    key TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    reason TEXT,
    vec BLOB,
    info TEXT
);
CREATE INDEX IF NOT EXISTS faces_sha ON faces(sha256);
"""


@dataclass
class CachedFace:
    """An embedding (or the reason there is none) for one image file."""

    vec: np.ndarray | None
    reason: str | None
    info: dict[str, float | int | str | list[float]]


class EmbeddingCache:
    """Thin wrapper over the SQLite file; ``None`` path means in-memory (no persistence)."""

    def __init__(self, path: Path | None, conn: sqlite3.Connection | None = None) -> None:
        if conn is not None:
            self.conn = conn  # shared with its owner (a gallery file), which set up the schema
            return
        if path is not None:
            # Hashes and face embeddings of people's photos: created 0600, or tightened when an older
            # version or a copy left it looser (SQLite gives its -wal/-shm files the database's mode).
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE))
            for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if p.exists():
                    tighten(p)
        self.conn = sqlite3.connect(str(path) if path else ":memory:")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    @classmethod
    def from_connection(cls, conn: sqlite3.Connection) -> EmbeddingCache:
        return cls(None, conn)

    @staticmethod
    def key(sha256: str, context: str) -> str:
        return f"{sha256}|{context}"

    def get(self, sha256: str, context: str) -> CachedFace | None:
        row = self.conn.execute(
            "SELECT reason, vec, info FROM faces WHERE key = ?", (self.key(sha256, context),)
        ).fetchone()
        if row is None:
            return None
        reason, vec, info = row
        return CachedFace(np.frombuffer(vec, dtype=np.float32).copy() if vec is not None else None,
                          reason, json.loads(info) if info else {})

    def put_many(self, rows: list[tuple[str, str, CachedFace]]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO faces(key, sha256, reason, vec, info) VALUES (?, ?, ?, ?, ?)",
                [
                    (self.key(sha, ctx), sha, f.reason,
                     f.vec.astype(np.float32).tobytes() if f.vec is not None else None, json.dumps(f.info))
                    for sha, ctx, f in rows
                ],
            )

    def rows(self) -> Iterator[tuple[str, str, CachedFace]]:
        """Every cached (sha256, context, face), in key order."""
        for key, reason, vec, info in self.conn.execute("SELECT key, reason, vec, info FROM faces ORDER BY key"):
            sha, _, ctx = key.partition("|")
            yield sha, ctx, CachedFace(np.frombuffer(vec, dtype=np.float32).copy() if vec is not None else None,
                                       reason, json.loads(info) if info else {})

    def delete_sha(self, sha256s: list[str]) -> int:
        with self.conn:
            cur = self.conn.executemany("DELETE FROM faces WHERE sha256 = ?", [(s,) for s in sha256s])
        return cur.rowcount

    def close(self) -> None:
        self.conn.close()
