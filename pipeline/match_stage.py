"""Match stage: gallery matcher per embedded face, then the track's k-of-n vote.

The matcher, threshold and margin are swapped atomically on SIGHUP (gallery reload).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from pipeline.match import Matcher, TrackVoter, decide
from pipeline.stage import Stage
from pipeline.types import EmbeddedFrame, EndedTrackSummary, MatchedFrame, SourceStatus, TrackDecision


class MatchStage(Stage):
    name = "match"

    def __init__(self, inq: queue.Queue[Any], outq: queue.Queue[Any], matcher: Matcher, threshold: float,
                 margin: float, voter: TrackVoter, gallery_version: int = 0) -> None:
        super().__init__(inq, outq)
        self.voter = voter
        self._lock = threading.Lock()
        self._state = (matcher, threshold, margin, gallery_version)

    def swap(self, matcher: Matcher, threshold: float, margin: float, gallery_version: int) -> None:
        with self._lock:
            self._state = (matcher, threshold, margin, gallery_version)

    @property
    def gallery_version(self) -> int:
        return self._state[3]

    def handle(self, msg: Any) -> None:
        if isinstance(msg, SourceStatus):
            self.emit(msg)
            return
        if not isinstance(msg, EmbeddedFrame):
            raise ValueError(f"match stage got an unexpected message {type(msg).__name__}")
        with self._lock:
            matcher, threshold, margin, _ = self._state
        src = msg.tracked.frame.source_id
        decisions = []
        if msg.embeddings:
            import numpy as np

            cands = matcher.topk(np.stack([e.vec for e in msg.embeddings]), 5)
            for e, c in zip(msg.embeddings, cands, strict=True):
                r = decide(c, threshold, margin)
                claimed, newly, unknown = self.voter.add((src, e.track_id), r)
                decisions.append(TrackDecision(e.track_id, e.detection, r.identity, r.score, r.margin, claimed,
                                               newly, unknown))
        ended = []
        for t in msg.tracked.ended:
            ident, best = self.voter.finish((src, t.track_id))
            ended.append(EndedTrackSummary(t, ident, best))
        self.emit(MatchedFrame(msg.tracked, tuple(decisions), tuple(ended)))
