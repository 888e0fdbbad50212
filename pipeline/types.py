"""Typed messages passed between stages; never dicts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.detection import Detection

__all__ = [
    "DetectedFrame",
    "Detection",
    "EmbeddedFrame",
    "EndedTrack",
    "EndedTrackSummary",
    "FaceEmbedding",
    "Frame",
    "MatchedFrame",
    "Shutdown",
    "SourceStatus",
    "TrackDecision",
    "TrackView",
    "TrackedFrame",
]


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``pts`` is the presentation time in seconds for files; live sources
    carry their capture time (epoch seconds) in ``capture_time`` and ``pts`` None."""

    source_id: str
    index: int
    pts: float | None
    capture_time: float
    image: np.ndarray  # RGB uint8 (H, W, 3)
    live: bool


@dataclass(frozen=True)
class SourceStatus:
    """A change in a source's state: opened, eof, error, reconnecting."""

    source_id: str
    status: str
    detail: str
    time: float
    frames_read: int
    frames_dropped: int


@dataclass(frozen=True)
class DetectedFrame:
    """A frame after the detect stage; ``detections`` is None on frames the detector skipped."""

    frame: Frame
    detections: tuple[Detection, ...] | None


@dataclass(frozen=True)
class TrackView:
    """A track as it stands on one frame; ``detection`` is set when a face was matched to it here."""

    track_id: int
    box: tuple[float, float, float, float]
    detection: Detection | None
    first_frame: int
    hits: int


@dataclass(frozen=True)
class EndedTrack:
    """A track that has not been seen for longer than the tracker's maximum age (or whose source ended)."""

    track_id: int
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    frames_seen: int


@dataclass(frozen=True)
class TrackedFrame:
    """A frame with its tracks, the track ids to embed on it, and the tracks that ended."""

    frame: Frame
    tracks: tuple[TrackView, ...]
    embed: tuple[int, ...]
    ended: tuple[EndedTrack, ...]
    scene_cut: bool = False  # a shot change ended every track before this frame


@dataclass(frozen=True)
class FaceEmbedding:
    """One aligned face's unit embedding, for one track on one frame."""

    track_id: int
    vec: np.ndarray
    detection: Detection
    quality: float


@dataclass(frozen=True)
class EmbeddedFrame:
    tracked: TrackedFrame
    embeddings: tuple[FaceEmbedding, ...]


@dataclass(frozen=True)
class TrackDecision:
    """The match stage's verdict for one embedded face of a track."""

    track_id: int
    detection: Detection
    identity: str | None  # this embedding's own decision (threshold + margin)
    score: float
    margin: float
    claimed: str | None  # identity the track holds after the k-of-n vote
    newly_claimed: bool  # the vote just switched the track to ``claimed``
    unknown: bool  # the track just became a confirmed unknown (reported once)


@dataclass(frozen=True)
class EndedTrackSummary:
    ended: EndedTrack
    identity: str | None
    best_score: float


@dataclass(frozen=True)
class MatchedFrame:
    tracked: TrackedFrame
    decisions: tuple[TrackDecision, ...]
    ended: tuple[EndedTrackSummary, ...]


@dataclass(frozen=True)
class Shutdown:
    """Sentinel sent down the queues after the last message: each stage drains, passes it on, exits."""
