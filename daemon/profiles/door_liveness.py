"""A door track's liveness: the mean live score (MiniFASNet, ``pipeline/liveness.py``) over the same judged
faces its vote uses. Scored only while the track is undecided, and only when a door runs, so a daemon
without a door never loads the models."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)

Key = tuple[str, int]


class TrackLiveness:
    def __init__(self, scorer: Any, threshold: float, min_frames: int) -> None:
        self.scorer, self.threshold, self.min_frames = scorer, threshold, min_frames
        self._scores: dict[Key, list[float]] = defaultdict(list)
        self.faces_scored = 0

    def add(self, key: Key, image: np.ndarray, box: tuple[float, float, float, float]) -> None:
        try:
            self._scores[key].append(self.scorer.score(image, box))
            self.faces_scored += 1
        except ValueError as exc:  # a degenerate box at the frame's edge: that face does not count
            log.debug("liveness_face_skipped", error=str(exc))

    def verdict(self, key: Key) -> tuple[str, float | None]:
        """('pending' | 'live' | 'attack', mean score): pending until ``min_frames`` faces were scored."""
        scores = self._scores.get(key, [])
        if len(scores) < self.min_frames:
            return "pending", (round(float(np.mean(scores)), 4) if scores else None)
        mean = float(np.mean(scores))
        return ("live" if mean >= self.threshold else "attack"), round(mean, 4)

    def forget(self, key: Key) -> None:
        self._scores.pop(key, None)


def make_liveness(settings: Any) -> TrackLiveness:
    """The models the door needs, loaded now: missing or corrupt weights fail the start in one line."""
    from pipeline.liveness import LivenessScorer, LivenessSettings

    lv = settings.liveness
    scorer = LivenessScorer(LivenessSettings(runtime=lv.runtime, threads=1, weights_dir=lv.weights_dir,
                                             threshold=lv.threshold))
    return TrackLiveness(scorer, lv.threshold, lv.min_frames)
