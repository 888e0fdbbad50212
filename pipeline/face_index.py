"""``faces.index``: one row per track of an analysis (its unit quality-weighted embedding, video, from-to,
best frame, decision), so "where does this person appear?" is answered without re-running the videos.

Why SQLite and not FAISS's file or a bare ``.npz``: the rows carry text (video, decision, identity, group) and
metadata (embedder id, the threshold the analysis matched at), SQLite writes them in one transaction, checks
its own integrity and is read by any tool; the file is written as ``faces.index.tmp`` and renamed, so a
crash never leaves half an index. Vectors are float32 blobs. The search is exact NumPy (one matrix
product and ``argpartition``); an analysis of ``FAISS_FROM`` tracks or more also writes FAISS's HNSW file
``faces.hnsw`` (``pipeline/match_index.py``), which search then uses: building one takes far longer than an
exact search of the same rows, so it is built once, never per search (measured in docs/profiles.md, "Face
index and search"). Both files name people: 0600.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.private_files import open_private

INDEX_NAME = "faces.index"
HNSW_NAME = "faces.hnsw"  # FAISS's own file, written for large indexes only
FORMAT = "facestream-faces-index"
VERSION = 1
APP_ID = 0x46534958  # 'FSIX': `file` and our reader tell it from a gallery
FAISS_FROM = 1_000_000  # rows from which analyze also writes an HNSW index (docs/profiles.md, "Face index ...")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tracks (
    id INTEGER PRIMARY KEY, video TEXT NOT NULL, path TEXT NOT NULL, track_id INTEGER NOT NULL,
    start_s REAL NOT NULL, end_s REAL NOT NULL, best_frame INTEGER NOT NULL, best_time_s REAL NOT NULL,
    best_quality REAL NOT NULL, best_box TEXT NOT NULL, decision TEXT NOT NULL, identity TEXT,
    score REAL NOT NULL, faces INTEGER NOT NULL, face_file TEXT, cluster TEXT, embedding BLOB NOT NULL);
"""


class FaceIndexError(ValueError):
    """A missing or unreadable index: one line naming the file."""


@dataclass
class TrackRow:
    """One track of an analysis as the index stores it."""

    video: str  # the source id (file stem)
    path: str  # the video file analysed
    track_id: int
    start_s: float
    end_s: float
    best_frame: int  # frame number of the track's best (highest quality) judged face
    best_time_s: float
    best_quality: float
    best_box: tuple[float, float, float, float]
    decision: str  # recognized / unknown / undecided
    identity: str | None
    score: float
    faces: int  # judged faces in the embedding
    embedding: np.ndarray = field(repr=False)
    face_file: str | None = None  # the best face's crop, relative to the analysis folder (unknown tracks)
    cluster: str | None = None  # unknown-N: the group an unknown track was put in


@dataclass(frozen=True)
class IndexMeta:
    """What a search must agree with: the embedder, and the threshold the analysis decided at."""

    model_id: str
    dim: int
    threshold: float
    margin: float
    threshold_source: str
    gallery: str | None


def write_index(folder: Path, meta: IndexMeta, rows: list[TrackRow]) -> Path:
    """Write ``folder/faces.index`` (0600) in one transaction, via a temporary file and a rename."""
    path, tmp = folder / INDEX_NAME, folder / (INDEX_NAME + ".tmp")
    open_private(tmp, "wb").close()  # created 0600 before SQLite opens it
    conn = sqlite3.connect(str(tmp))
    try:
        conn.executescript(f"PRAGMA journal_mode = MEMORY; PRAGMA application_id = {APP_ID};" + _SCHEMA)
        with conn:
            items = {"format": FORMAT, "version": str(VERSION), **{k: json.dumps(v) for k, v in asdict(meta).items()}}
            conn.executemany("INSERT INTO meta VALUES (?, ?)", items.items())
            conn.executemany(
                "INSERT INTO tracks (video, path, track_id, start_s, end_s, best_frame, best_time_s, best_quality,"
                " best_box, decision, identity, score, faces, face_file, cluster, embedding)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.video, r.path, r.track_id, r.start_s, r.end_s, r.best_frame, r.best_time_s, r.best_quality,
                  json.dumps([round(float(c), 1) for c in r.best_box]), r.decision, r.identity, r.score, r.faces,
                  r.face_file, r.cluster, np.asarray(r.embedding, dtype=np.float32).tobytes()) for r in rows])
    finally:
        conn.close()
    os.replace(tmp, path)
    return path


@dataclass
class FaceIndex:
    """An index as read: its metadata, rows (without vectors) and the (N, dim) unit vectors."""

    folder: Path
    meta: IndexMeta
    rows: list[dict[str, Any]]
    vectors: np.ndarray

    @property
    def hnsw(self) -> Path | None:
        """The stored FAISS index, when the analysis wrote one."""
        p = self.folder / HNSW_NAME
        return p if p.is_file() else None

    def search(self, query: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
        return search_vectors(self.vectors, query, top, self.hnsw)

    @classmethod
    def open(cls, folder: Path) -> FaceIndex:
        path = folder / INDEX_NAME if folder.is_dir() else folder
        folder = path.parent
        if not path.is_file():
            raise FaceIndexError(f"no face index at {path}: analyse the videos with 'facestream analyze' first")
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                if conn.execute("PRAGMA application_id").fetchone()[0] != APP_ID:
                    raise FaceIndexError(f"{path} is not a facestream face index")
                kv = dict(conn.execute("SELECT key, value FROM meta"))
                if kv.get("format") != FORMAT or int(kv.get("version", 0)) > VERSION:
                    raise FaceIndexError(f"{path}: unknown index format {kv.get('format')} {kv.get('version')}")
                cur = conn.execute("SELECT * FROM tracks ORDER BY id")
                names = [d[0] for d in cur.description]
                raw = [dict(zip(names, r, strict=True)) for r in cur]
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise FaceIndexError(f"{path} cannot be read as a face index: {exc}") from None
        meta = IndexMeta(**{k: json.loads(kv[k]) for k in IndexMeta.__dataclass_fields__})
        blobs = [r.pop("embedding") for r in raw]
        vecs = (np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), meta.dim) if blobs
                else np.zeros((0, meta.dim), np.float32))
        for r in raw:
            r["best_box"] = json.loads(r["best_box"])
        return cls(folder, meta, raw, vecs)

    def clusters(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            if r["cluster"]:
                out.setdefault(r["cluster"], []).append(r)
        return out


def write_hnsw(folder: Path, vectors: np.ndarray, faiss_from: int = FAISS_FROM) -> Path | None:
    """``faces.hnsw`` beside the index when it has ``faiss_from`` rows or more and faiss is installed: built once
    with the analysis (minutes at 10^6 rows, against days of video), never at search time."""
    from pipeline.match_index import FaissMatcher, faiss_available

    if len(vectors) < faiss_from or not faiss_available():
        return None
    import faiss

    index = FaissMatcher([str(i) for i in range(len(vectors))], vectors, "hnsw").index
    path, tmp = folder / HNSW_NAME, folder / (HNSW_NAME + ".tmp")
    open_private(tmp, "wb").close()
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    return path


def search_vectors(vectors: np.ndarray, query: np.ndarray, top: int,
                   hnsw: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, scores) of the ``top`` rows most similar to the unit ``query``, best first: the stored
    HNSW index when one is given (an index of ``FAISS_FROM`` rows or more), else exact NumPy."""
    from pipeline.match import top_indices

    n = len(vectors)
    if n == 0 or top <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if hnsw is None:
        scores = vectors @ query.astype(np.float32)
        idx = top_indices(scores[None, :], min(top, n))[0]
        return idx, scores[idx]
    import faiss

    from pipeline.match_index import IndexParams

    index = faiss.read_index(str(hnsw))
    if index.ntotal != n:
        raise FaceIndexError(f"{hnsw} holds {index.ntotal} rows, the index {n}: rebuild it")
    index.hnsw.efSearch = max(IndexParams().ef_search, top)
    scores, idx = index.search(np.ascontiguousarray(query[None, :], dtype=np.float32), min(top, n))
    keep = idx[0] >= 0
    return idx[0][keep].astype(np.int64), scores[0][keep]
