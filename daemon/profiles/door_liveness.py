"""A door track's liveness: the mean live score (MiniFASNet, ``pipeline/liveness.py``) over the same judged
faces its vote uses. Scored only while the door has not decided the track, and only when a door runs, so a
daemon without a door never loads the models.

It is an events-stage annotator (``Daemon.add_annotator``): each frame's judged faces are scored before that
frame's events go out, so ``face.recognized`` (and ``face.unknown``) carry the track's ``live_score`` so far,
and the door, which observes the frame after its events, reads the verdict on the same faces.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import structlog

from pipeline.types import MatchedFrame

log = structlog.get_logger(__name__)

Key = tuple[str, int]


class TrackLiveness:
    def __init__(self, scorer: Any, threshold: float, min_frames: int) -> None:
        self.scorer, self.threshold, self.min_frames = scorer, threshold, min_frames
        self._scores: dict[Key, list[float]] = {}
        self._settled: set[Key] = set()  # decided by the door: later faces are not scored
        self.faces_scored = 0
        self.scoring_s = 0.0  # time spent scoring, for the benchmark's per-face figure

    def annotate(self, msg: MatchedFrame) -> None:
        """Score this frame's judged faces of the tracks the door still decides, one call a face (ONNX Runtime
        is cheapest per face at batch 1: docs/liveness.md)."""
        frame = msg.tracked.frame
        t0 = time.perf_counter()
        for d in msg.decisions:
            key = (frame.source_id, d.track_id)
            if key in self._settled:
                continue
            try:
                score = self.scorer.score(frame.image, d.detection.box)
            except ValueError as exc:  # a degenerate box at the frame's edge: that face does not count
                log.debug("liveness_face_skipped", error=str(exc))
                continue
            self._scores.setdefault(key, []).append(score)
            self.faces_scored += 1
        self.scoring_s += time.perf_counter() - t0

    def fields(self, source_id: str, track_id: int) -> dict[str, Any]:
        """``live_score`` (and how many faces it is the mean of) for a face event, once the track has one."""
        scores = self._scores.get((source_id, track_id))
        return {"live_score": round(float(np.mean(scores)), 4), "live_faces": len(scores)} if scores else {}

    def verdict(self, key: Key) -> tuple[str, float | None]:
        """('pending' | 'live' | 'attack', mean score): pending until ``min_frames`` faces were scored."""
        scores = self._scores.get(key, [])
        if len(scores) < self.min_frames:
            return "pending", (round(float(np.mean(scores)), 4) if scores else None)
        mean = float(np.mean(scores))
        return ("live" if mean >= self.threshold else "attack"), round(mean, 4)

    def settle(self, key: Key) -> None:
        """The door has decided this track: its later faces cost nothing."""
        self._settled.add(key)

    def forget(self, key: Key) -> None:
        self._scores.pop(key, None)
        self._settled.discard(key)

    def source_ended(self, source_id: str) -> None:
        for key in [k for k in {*self._scores, *self._settled} if k[0] == source_id]:
            self.forget(key)


def make_liveness(settings: Any) -> TrackLiveness:
    """The models the door needs, loaded now: missing or corrupt weights fail the start in one line."""
    from pipeline.liveness import LivenessScorer, LivenessSettings

    lv = settings.liveness
    scorer = LivenessScorer(LivenessSettings(runtime=lv.runtime, threads=1, weights_dir=lv.weights_dir,
                                             cache_dir=settings.cache_dir / "liveness",
                                             export_dir=settings.cache_dir / "exports", threshold=lv.threshold))
    # One call on a blank frame now: ONNX Runtime sizes its buffers on the first run (tens of ms), which would
    # otherwise fall on the first person at the door.
    scorer.score_many([(np.zeros((120, 120, 3), np.uint8), (40.0, 40.0, 80.0, 80.0))])
    return TrackLiveness(scorer, lv.threshold, lv.min_frames)
