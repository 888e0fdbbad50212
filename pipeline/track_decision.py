"""Per-track decisions from everything a track has seen: named, unknown, or undecided with a reason.

Consecutive frames of one face give nearly the same embedding, so counting per-frame votes says little
more than one frame does, and a stranger who resembles someone wins every vote. Instead a track keeps
the quality-weighted mean of its judgeable faces (big enough, sharp enough, frontal enough) and the
gallery decision (threshold + top-1 − top-2 margin) is taken on that mean. A name needs ``min_faces``
judgeable faces; ``unknown_after`` judgeable faces that name nobody make the track a confirmed unknown
(reported once); a track that ends before either is decided on what it has, so every track with at
least one judgeable face ends with a decision. A track that never showed one ends undecided, and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.detection import Detection
from pipeline.match import MatchResult

UNDECIDED_NO_EMBEDDING = "no face was embedded"
UNDECIDED_NOT_JUDGEABLE = "no face good enough to judge"


@dataclass
class _Evidence:
    weighted_sum: np.ndarray | None = None
    weight: float = 0.0
    judged: int = 0  # judgeable faces aggregated
    rejected: dict[str, int] = field(default_factory=dict)  # why other faces were not used
    claimed: str | None = None
    unknown_reported: bool = False
    best_score: float = 0.0
    last: MatchResult | None = None
    detection: Detection | None = None  # the last judged face


@dataclass(frozen=True)
class Verdict:
    """What a track holds after a face was added (or the track ended)."""

    claimed: str | None  # the identity the track is named as
    newly_claimed: bool  # this update named it (or switched it to another identity)
    unknown: bool  # this update made it a confirmed unknown (reported once per track)
    result: MatchResult | None  # the decision on the aggregate, None when nothing is aggregated yet
    faces: int  # judgeable faces aggregated


@dataclass(frozen=True)
class FinalVerdict:
    """How a track ended: ``decision`` is recognized, unknown or undecided (then ``reason`` says why)."""

    claimed: str | None
    decision: str
    reason: str | None
    newly_claimed: bool  # named only now, at its end
    newly_unknown: bool  # confirmed unknown only now, at its end
    result: MatchResult | None
    faces: int
    detection: Detection | None = None
    best_score: float = 0.0


class TrackJudge:
    """Aggregates each track's judgeable embeddings; ``score`` turns a vector into a MatchResult."""

    def __init__(self, min_faces: int = 2, unknown_after: int = 3) -> None:
        if min_faces < 1:
            raise ValueError(f"min_faces must be >= 1, got {min_faces}")
        if unknown_after < 1:
            raise ValueError(f"unknown_after must be >= 1, got {unknown_after}")
        self.min_faces = min_faces
        self.unknown_after = unknown_after
        self.tracks: dict[tuple[str, int], _Evidence] = {}

    def aggregate(self, key: tuple[str, int]) -> np.ndarray | None:
        """The unit quality-weighted mean of the track's judgeable embeddings (None before the first)."""
        ev = self.tracks.get(key)
        if ev is None or ev.weighted_sum is None:
            return None
        n = float(np.linalg.norm(ev.weighted_sum))
        return (ev.weighted_sum / n).astype(np.float32) if n > 0 else None

    def add(self, key: tuple[str, int], vec: np.ndarray, weight: float, rejected_because: str | None,
            detection: Detection | None = None) -> bool:
        """Record one embedded face; returns whether it was aggregated (judgeable)."""
        ev = self.tracks.setdefault(key, _Evidence())
        if rejected_because is not None:
            ev.rejected[rejected_because] = ev.rejected.get(rejected_because, 0) + 1
            return False
        w = max(float(weight), 1e-3)
        v = np.asarray(vec, dtype=np.float64) * w
        ev.weighted_sum = v if ev.weighted_sum is None else ev.weighted_sum + v
        ev.weight += w
        ev.judged += 1
        ev.detection = detection
        return True

    def judge(self, key: tuple[str, int], result: MatchResult) -> Verdict:
        """Apply the gallery decision on the current aggregate."""
        ev = self.tracks.setdefault(key, _Evidence())
        ev.last = result
        if result.identity is not None:
            ev.best_score = max(ev.best_score, result.score)
        newly = unknown = False
        if result.identity is not None and ev.judged >= self.min_faces and result.identity != ev.claimed:
            ev.claimed, newly = result.identity, True
        if (ev.claimed is None and not ev.unknown_reported and ev.judged >= self.unknown_after
                and result.identity is None):
            ev.unknown_reported = unknown = True
        return Verdict(ev.claimed, newly, unknown, result, ev.judged)

    def pending(self, key: tuple[str, int]) -> bool:
        """True while the track has judgeable faces but no decision yet (decide it with ``finish``)."""
        ev = self.tracks.get(key)
        return ev is not None and ev.judged > 0 and ev.claimed is None and not ev.unknown_reported

    def finish(self, key: tuple[str, int], final: MatchResult | None) -> FinalVerdict:
        """Forget an ended track. ``final`` is the decision on its aggregate, needed when ``pending``."""
        ev = self.tracks.pop(key, None)
        if ev is None:
            return FinalVerdict(None, "undecided", UNDECIDED_NO_EMBEDDING, False, False, None, 0)
        det, best = ev.detection, ev.best_score
        if ev.claimed is not None:
            return FinalVerdict(ev.claimed, "recognized", None, False, False, ev.last, ev.judged, det, best)
        if ev.unknown_reported:
            return FinalVerdict(None, "unknown", None, False, False, ev.last, ev.judged, det, best)
        if ev.judged == 0:
            why = max(ev.rejected.items(), key=lambda kv: kv[1])[0] if ev.rejected else UNDECIDED_NO_EMBEDDING
            return FinalVerdict(None, "undecided", why, False, False, None, 0, det, best)
        if final is None:
            raise ValueError("a track with judgeable faces needs the decision on its aggregate to finish")
        if final.identity is not None:
            return FinalVerdict(final.identity, "recognized", None, True, False, final, ev.judged, det,
                                max(best, final.score))
        return FinalVerdict(None, "unknown", None, False, True, final, ev.judged, det, best)
