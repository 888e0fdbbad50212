"""Embed stage: align the faces the tracker asked for and embed them in one batch per frame.

One batch per frame keeps a file's results independent of timing (deterministic analysis).
"""

from __future__ import annotations

import queue
from typing import Any

import numpy as np

from models.embedder import Embedder
from pipeline.face_measures import face_quality, laplacian_blur
from pipeline.stage import Stage
from pipeline.types import EmbeddedFrame, FaceEmbedding, TrackedFrame


class EmbedStage(Stage):
    name = "embed"
    accepts = (TrackedFrame,)

    def __init__(self, inq: queue.Queue[Any], outq: queue.Queue[Any], embedder: Embedder) -> None:
        super().__init__(inq, outq)
        self.embedder = embedder
        self.faces_embedded = 0

    def handle_failed(self, msg: Any) -> None:
        """Embedding failed: the frame goes on without embeddings, its ended tracks with it."""
        if isinstance(msg, TrackedFrame):
            self.emit(EmbeddedFrame(msg, ()))
        else:
            super().handle_failed(msg)

    def process(self, msg: TrackedFrame) -> None:
        if not msg.embed:
            self.emit(EmbeddedFrame(msg, ()))
            return
        views = {v.track_id: v for v in msg.tracks}
        dets = [(tid, views[tid].detection) for tid in msg.embed if views[tid].detection is not None]
        chips = np.stack([self.embedder.align(msg.frame.image, d) for _, d in dets])  # type: ignore[arg-type]
        vecs = self.embedder.embed(chips)
        self.faces_embedded += len(vecs)
        self.emit(EmbeddedFrame(msg, tuple(FaceEmbedding(tid, v, d, face_quality(d), laplacian_blur(c))  # type: ignore[arg-type]
                                           for (tid, d), v, c in zip(dets, vecs, chips, strict=True))))
