"""The face index of an analysis: an observer keeps each track's best judged face while it lasts and a row
per ended track with its embedding; at the end the unknown tracks are grouped and ``faces.index`` written.

Only unknown tracks keep a face crop on disk (``faces/<video>-t<track>.jpg``): it is what a person looks at
before enrolling a group, and what ``gallery add --from-index`` enrols through the normal photo path (so
the gallery's quality gates judge the crop like any photo). Recognised tracks already have a name.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.face_groups import cluster
from pipeline.face_index import FAISS_FROM, IndexMeta, TrackRow, write_hnsw, write_index
from pipeline.face_measures import face_quality
from pipeline.names import file_stem
from pipeline.private_files import open_private
from pipeline.types import MatchedFrame, frame_time


@dataclass
class _Best:
    quality: float
    frame: int
    time_s: float
    box: tuple[float, float, float, float]
    crop: np.ndarray  # RGB, the face with some context (the still detector must find it again)


def _crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x1, y1, x2, y2 = box
    pad = 0.5 * max(x2 - x1, y2 - y1)
    h, w = image.shape[:2]
    return image[max(0, int(y1 - pad)):min(h, int(y2 + pad)), max(0, int(x1 - pad)):min(w, int(x2 + pad))].copy()


class TrackIndexer:
    """A frame observer: one :class:`TrackRow` per ended track that has an embedding."""

    def __init__(self, out: Path, paths: dict[str, Path]) -> None:
        self.out = out
        self.paths = paths
        self.rows: list[TrackRow] = []
        self._best: dict[tuple[str, int], _Best] = {}

    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        frame = msg.tracked.frame
        for d in msg.decisions:
            key, q = (frame.source_id, d.track_id), face_quality(d.detection)
            b = self._best.get(key)
            if b is None or q > b.quality:
                self._best[key] = _Best(q, frame.index, frame_time(frame), d.detection.box,
                                        _crop(frame.image, d.detection.box))
        for s in msg.ended:
            b = self._best.pop((frame.source_id, s.ended.track_id), None)
            if s.embedding is None or b is None:
                continue
            row = TrackRow(frame.source_id, str(self.paths.get(frame.source_id, "")), s.ended.track_id,
                           round(s.ended.first_time, 3), round(s.ended.last_time, 3), b.frame, round(b.time_s, 3),
                           round(b.quality, 4), b.box, s.decision, s.identity,
                           round(s.best_score if s.identity else s.score, 4), s.faces, s.embedding)
            if s.decision == "unknown":
                row.face_file = self._write_face(row, b.crop)
            self.rows.append(row)

    def _write_face(self, row: TrackRow, crop: np.ndarray) -> str | None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            return None
        (self.out / "faces").mkdir(exist_ok=True)
        rel = f"faces/{file_stem(row.video)}-t{row.track_id}.jpg"
        with open_private(self.out / rel, "wb") as f:
            f.write(buf.tobytes())
        return rel

    def source_ended(self, source_id: str) -> None:
        pass

    def close(self) -> None:
        pass


def group_unknowns(rows: list[TrackRow], threshold: float, order: list[str]) -> None:
    """Put each unknown track in a group ``unknown-N``: largest group first, then by first seen (``order``:
    the videos as given)."""
    pos = {v: i for i, v in enumerate(order)}
    unknown = sorted((r for r in rows if r.decision == "unknown"),
                     key=lambda r: (pos.get(r.video, len(pos)), r.start_s, r.track_id))
    if not unknown:
        return
    labels = cluster(np.stack([r.embedding for r in unknown]), threshold)
    for r, lab in zip(unknown, labels.tolist(), strict=True):
        r.cluster = f"unknown-{lab + 1}"


def group_summaries(rows: list[TrackRow] | list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """"unknown 1: N appearances in K videos, first/last seen, best face" per group, from index rows
    (``order``: the videos in the order they were given, the only order videos without a clock have)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        d = r if isinstance(r, dict) else vars(r)
        if d.get("cluster"):
            groups[d["cluster"]].append(d)
    pos = {v: i for i, v in enumerate(order)}

    def when(d: dict[str, Any]) -> tuple[int, float]:
        return pos.get(d["video"], len(pos)), d["start_s"]

    out = []
    for name, members in sorted(groups.items(), key=lambda kv: int(kv[0].split("-")[1])):
        first, last = min(members, key=when), max(members, key=lambda d: (when(d)[0], d["end_s"]))
        best = max(members, key=lambda d: d["best_quality"])
        out.append({"group": name, "label": name.replace("-", " "), "appearances": len(members),
                    "videos": len({d["video"] for d in members}),
                    "first_seen": {"video": first["video"], "time_s": first["start_s"]},
                    "last_seen": {"video": last["video"], "time_s": last["end_s"]},
                    "best_face": best["face_file"],
                    "spans": [(d["video"], d["start_s"], d["end_s"]) for d in members]})
    return out


def write_face_index(out: Path, meta: IndexMeta, rows: list[TrackRow], order: list[str],
                     faiss_from: int = FAISS_FROM) -> Path:
    """Group the unknown tracks, write ``faces.index`` (and ``faces.hnsw`` for a large one)."""
    group_unknowns(rows, meta.threshold, order)
    path = write_index(out, meta, rows)
    if rows:
        write_hnsw(out, np.stack([r.embedding for r in rows]).astype(np.float32), faiss_from)
    return path
