"""Embed stage: align the faces the tracker asked for and embed them in one batch.

A file's frame is one batch of its own, which keeps its results independent of timing (deterministic
analysis). Live frames already waiting, of every camera, go in one call (``max_frames``): on a GPU one
call of many faces costs about what one of a few does, so cameras share it instead of queueing for it.
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

    def __init__(self, inq: queue.Queue[Any], outq: queue.Queue[Any], embedder: Embedder,
                 max_frames: int = 8) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        super().__init__(inq, outq)
        self.embedder = embedder
        self.max_frames = max_frames
        self.faces_embedded = 0
        self.embed_calls = 0
        self._in_hand: list[TrackedFrame] = []

    def handle_failed(self, msg: Any) -> None:
        """Embedding failed: the frames in hand go on without embeddings, their ended tracks with them."""
        if isinstance(msg, TrackedFrame):
            for m in self._in_hand or [msg]:
                self.emit(EmbeddedFrame(m, ()))
            self._in_hand = []
        else:
            super().handle_failed(msg)

    def process(self, msg: TrackedFrame) -> None:
        frames = [msg]
        while msg.frame.live and len(frames) < self.max_frames:
            try:
                more = self.inq.get_nowait()
            except queue.Empty:
                break
            if not (isinstance(more, TrackedFrame) and more.frame.live):
                self.backlog.append(more)  # a status, a file's frame or the end: handled next, in order
                break
            frames.append(more)
        self._in_hand = frames
        faces = []
        for m in frames:
            views = {v.track_id: v for v in m.tracks}
            faces += [(m, tid, views[tid].detection) for tid in m.embed if views[tid].detection is not None]
        out: dict[int, list[FaceEmbedding]] = {id(m): [] for m in frames}
        if faces:
            chips = np.stack([self.embedder.align(m.frame.image, d) for m, _, d in faces])  # type: ignore[arg-type]
            vecs = self.embedder.embed(chips)
            self.faces_embedded += len(vecs)
            self.embed_calls += 1
            for (m, tid, d), v, c in zip(faces, vecs, chips, strict=True):
                out[id(m)].append(FaceEmbedding(tid, v, d, face_quality(d), laplacian_blur(c)))  # type: ignore[arg-type]
        for m in frames:
            self.emit(EmbeddedFrame(m, tuple(out[id(m)])))
        self._in_hand = []
