"""Detect stage: MTCNN on every N-th frame of each source, batched.

File frames are grouped per source into fixed batches of detection frames (independent of timing),
so analysing a file twice gives identical detections. Live frames are detected at once, batched
with whatever other live frames are already waiting, to keep latency low.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from typing import Any

from models.detector import MTCNNDetector
from pipeline.stage import Stage
from pipeline.types import DetectedFrame, Frame, SourceStatus


class DetectStage(Stage):
    name = "detect"

    def __init__(self, inq: queue.Queue[Any], outq: queue.Queue[Any], detector: MTCNNDetector, every: int = 2,
                 batch: int = 4, stopping: threading.Event | None = None) -> None:
        if every < 1:
            raise ValueError(f"detect_every must be >= 1, got {every}")
        if batch < 1:
            raise ValueError(f"detect_batch must be >= 1, got {batch}")
        super().__init__(inq, outq)
        self.detector = detector
        self.every = every
        self.batch = batch
        self.frames_detected = 0
        self.frames_skipped_on_stop = 0
        self.stopping = stopping or threading.Event()
        self._pending: dict[str, list[Frame]] = defaultdict(list)

    def is_detect_frame(self, frame: Frame) -> bool:
        return frame.index % self.every == 0

    def handle(self, msg: Any) -> None:
        if isinstance(msg, SourceStatus):
            self._run(msg.source_id)
            self.emit(msg)
            return
        if not isinstance(msg, Frame):
            raise ValueError(f"detect stage got an unexpected message {type(msg).__name__}")
        if self.stopping.is_set():
            # The daemon is stopping: frames read but not yet processed are let go (they produce no
            # events), so a stop takes as long as the frames already past detection, not the queue.
            self.frames_skipped_on_stop += 1
            return
        pend = self._pending[msg.source_id]
        pend.append(msg)
        if msg.live:
            # Batch with live frames of other sources that are already waiting (no waiting for more).
            extra: list[Any] = []
            while len(extra) < self.batch - 1:
                try:
                    extra.append(self.inq.get_nowait())
                except queue.Empty:
                    break
            live_sources = {msg.source_id}
            for m in extra:
                if isinstance(m, Frame) and m.live:
                    self._pending[m.source_id].append(m)
                    live_sources.add(m.source_id)
            self._run_many(sorted(live_sources))
            # File frames, statuses and the shutdown sentinel go back to the loop, in their order.
            self.backlog.extend(m for m in extra if not (isinstance(m, Frame) and m.live))
            return
        if sum(self.is_detect_frame(f) for f in pend) >= self.batch:
            self._run(msg.source_id)

    def handle_failed(self, msg: Any) -> None:
        """Detection failed: the frames waiting with this one go on undetected (tracks carry them)."""
        if isinstance(msg, Frame):
            for frames in self._pending.values():
                for f in frames:
                    self.emit(DetectedFrame(f, None))
            self._pending.clear()
        else:
            super().handle_failed(msg)

    def _run(self, source_id: str) -> None:
        self._run_many([source_id])

    def _run_many(self, source_ids: list[str]) -> None:
        frames = [f for s in source_ids for f in self._pending.pop(s, [])]
        todo = [f for f in frames if self.is_detect_frame(f)]
        found = self.detector.detect([f.image for f in todo]) if todo else []
        self.frames_detected += len(todo)
        by_id = {id(f): tuple(d) for f, d in zip(todo, found, strict=True)}
        for f in frames:
            self.emit(DetectedFrame(f, by_id.get(id(f))))

    def flush(self) -> None:
        self._run_many(sorted(self._pending))
