"""The faces behind recent ``face.recognized`` events, so ``POST /v1/events/{seq}/reject`` can record one as
"not this person" (``pipeline/gallery/negatives.py``).

The match stage names a track on the quality-weighted mean of its judgeable faces; this part keeps the same
mean per live track (an annotator: it sees each frame before its events go out) and, when a track is named,
remembers that mean under the track's (source, track id), which the event carries. Memory only, bounded:
the last ``keep`` named tracks (a 128-float vector each), gone when the daemon stops; the event log never
holds an embedding (events go to other hosts and brokers). Offline, ``facestream gallery reject`` takes a
photo of the face instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.types import FaceEmbedding, MatchedFrame


class NamedFaces:
    """Annotator and observer of the events stage (``Daemon.add_annotator`` and ``add_observer``)."""

    def __init__(self, judgeable: Callable[[FaceEmbedding], bool], keep: int = 1024) -> None:
        self.judgeable, self.keep = judgeable, keep
        self._sums: dict[tuple[str, int], np.ndarray] = {}
        self._named: OrderedDict[tuple[str, int], tuple[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()  # the API reads from its threads
        self._ended: list[tuple[str, int]] = []

    def annotate(self, msg: MatchedFrame) -> None:
        src = msg.tracked.frame.source_id
        for e in msg.embeddings:
            if self.judgeable(e):
                v = np.asarray(e.vec, np.float64) * max(float(e.quality), 1e-3)  # the track judge's weight
                key = (src, e.track_id)
                self._sums[key] = self._sums[key] + v if key in self._sums else v
        for d in msg.decisions:
            if d.newly_claimed and d.claimed is not None:
                self._remember((src, d.track_id), d.claimed, self._sums.get((src, d.track_id)))
        for s in msg.ended:
            key = (src, s.ended.track_id)
            if s.newly_claimed and s.identity is not None:
                agg = s.embedding  # the mean the end decision was taken on
                self._remember(key, s.identity, np.asarray(agg, np.float64) if agg is not None else self._sums.get(key))
            self._ended.append(key)

    def _remember(self, key: tuple[str, int], identity: str, vec: np.ndarray | None) -> None:
        n = float(np.linalg.norm(vec)) if vec is not None else 0.0
        if vec is None or n == 0.0:
            return
        with self._lock:
            self._named[key] = (identity, (vec / n).astype(np.float32))
            self._named.move_to_end(key)
            while len(self._named) > self.keep:
                self._named.popitem(last=False)

    def fields(self, source_id: str, track_id: int) -> dict[str, Any]:
        return {}

    def face(self, source_id: str, track_id: int, identity: str) -> np.ndarray | None:
        """The face the event of this track named ``identity`` on; None when no longer kept."""
        with self._lock:
            kept = self._named.get((source_id, track_id))
        return kept[1] if kept is not None and kept[0] == identity else None

    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        for key in self._ended:
            self._sums.pop(key, None)
        self._ended.clear()

    def source_ended(self, source_id: str) -> None:
        for key in [k for k in self._sums if k[0] == source_id]:
            del self._sums[key]

    def close(self) -> None:
        pass
