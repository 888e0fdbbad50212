"""Match stage: each judgeable face joins its track's aggregate, and the gallery decision is taken on
that aggregate (pipeline.track_decision); ended tracks get their final decision here.

The matcher and operating point are swapped atomically on SIGHUP (gallery reload).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np

from pipeline.match import Matcher, MatchResult, decide
from pipeline.stage import Stage
from pipeline.track_decision import TrackJudge
from pipeline.types import (
    EmbeddedFrame,
    EndedTrackSummary,
    FaceEmbedding,
    MatchedFrame,
    TrackDecision,
)


class FaceGate:
    """Which embedded faces are good enough to judge (to name someone on, or to call unknown)."""

    def __init__(self, min_px: float = 32.0, min_quality: float = 0.2, min_sharpness: float = 0.0,
                 min_prob: float = 0.0) -> None:
        self.min_px, self.min_quality, self.min_sharpness, self.min_prob = min_px, min_quality, min_sharpness, min_prob

    def reject(self, e: FaceEmbedding) -> str | None:
        d = e.detection
        if min(d.width, d.height) < self.min_px:
            return f"face too small (< {self.min_px:g} px)"
        if e.quality < self.min_quality:
            return "face turned away or too small to judge"
        if e.sharpness < self.min_sharpness:
            return f"face blurred (sharpness < {self.min_sharpness:g})"
        if d.prob < self.min_prob:
            return f"low detection probability (< {self.min_prob:g})"
        return None


class MatchStage(Stage):
    name = "match"
    accepts = (EmbeddedFrame,)

    def __init__(self, inq: queue.Queue[Any], outq: queue.Queue[Any], matcher: Matcher, threshold: float,
                 margin: float, judge: TrackJudge, gallery_version: int = 0, gate: FaceGate | None = None,
                 decide_after_s: float = 1.0, face_votes: bool = False, own: dict[str, float] | None = None) -> None:
        super().__init__(inq, outq)
        self.face_votes = face_votes  # each face also matched on its own (door k-of-n votes)
        self.decide_after_s = decide_after_s
        self.judge = judge
        self.gate = gate or FaceGate()
        self._lock = threading.Lock()
        self._state = (matcher, threshold, margin, gallery_version)
        self._own: dict[str, float] = dict(own or {})  # identities' own thresholds (pipeline/gallery/negatives.py)

    def swap(self, matcher: Matcher, threshold: float, margin: float, gallery_version: int,
             own: dict[str, float] | None = None) -> None:
        with self._lock:
            self._state = (matcher, threshold, margin, gallery_version)
            self._own = dict(own or {})

    def own_thresholds(self) -> dict[str, float]:
        with self._lock:
            return self._own

    def state(self) -> tuple[Matcher, float, float, int]:
        """(matcher, threshold, margin, gallery version) in use now, read together."""
        with self._lock:
            return self._state

    @property
    def gallery_version(self) -> int:
        return self._state[3]

    def _decide(self, key: tuple[str, int]) -> MatchResult | None:
        agg = self.judge.aggregate(key)
        if agg is None:
            return None
        with self._lock:
            matcher, threshold, margin, _ = self._state
            own = self._own
        return decide(matcher.topk(agg[None, :], 5)[0], threshold, margin, own)

    def handle_failed(self, msg: Any) -> None:
        """Matching failed: the frame goes on without decisions, but its ended tracks still end."""
        if not isinstance(msg, EmbeddedFrame):
            super().handle_failed(msg)
            return
        src = msg.tracked.frame.source_id
        ended = []
        for t in msg.tracked.ended:
            self.judge.tracks.pop((src, t.track_id), None)
            ended.append(EndedTrackSummary(t, None, 0.0, "undecided", "matching failed"))
        self.emit(MatchedFrame(msg.tracked, (), tuple(ended)))

    def process(self, msg: EmbeddedFrame) -> None:
        src = msg.tracked.frame.source_id
        decisions = []
        for e in msg.embeddings:
            key = (src, e.track_id)
            if not self.judge.add(key, np.asarray(e.vec), e.quality, self.gate.reject(e), e.detection):
                continue
            r = self._decide(key)
            assert r is not None
            v = self.judge.judge(key, r)
            face_identity = None
            if self.face_votes:
                with self._lock:
                    matcher, threshold, margin, _ = self._state
                    own = self._own
                face_identity = decide(matcher.topk(np.asarray(e.vec)[None, :], 2)[0], threshold, margin,
                                       own).identity
            decisions.append(TrackDecision(e.track_id, e.detection, r.identity, r.score, r.margin, v.claimed,
                                           v.newly_claimed, v.unknown, v.faces, face_identity,
                                           tuple(r.candidates[:2])))
        ended = []
        for t in msg.tracked.ended:
            key = (src, t.track_id)
            agg = self.judge.aggregate(key)
            fv = self.judge.finish(key, self._decide(key) if self.judge.pending(key) else None)
            reason, decision, newly_unknown = fv.reason, fv.decision, fv.newly_unknown
            if decision == "undecided" and t.not_embedded:
                reason = t.not_embedded
            if decision == "undecided" and t.sized_s >= self.decide_after_s:
                # In view long enough, never judgeable: nobody can be named on it, so it is an unknown face.
                decision, newly_unknown = "unknown", True
            r = fv.result
            ended.append(EndedTrackSummary(t, fv.claimed, fv.best_score if fv.claimed else 0.0, decision, reason,
                                           fv.newly_claimed, newly_unknown, fv.detection,
                                           r.score if r else 0.0, r.margin if r else 0.0, fv.faces, agg))
        self.emit(MatchedFrame(msg.tracked, tuple(decisions), tuple(ended), msg.embeddings))
