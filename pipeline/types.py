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
    "frame_time",
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


def frame_time(frame: Frame) -> float:
    """Media time for files (pts), capture time for live sources."""
    return frame.pts if frame.pts is not None else frame.capture_time


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
    scene_cut: bool = False  # a shot change since the previous frame of this source


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
    not_embedded: str | None = None  # why its faces were never embedded, when they were not
    sized_s: float = 0.0  # seconds between its first and last face big enough to embed


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
    quality: float  # size x frontality, the weight of this face in its track's aggregate
    sharpness: float = 0.0  # Laplacian variance of the aligned chip (low = blurred)


@dataclass(frozen=True)
class EmbeddedFrame:
    tracked: TrackedFrame
    embeddings: tuple[FaceEmbedding, ...]


@dataclass(frozen=True)
class TrackDecision:
    """The match stage's verdict on a track after one judgeable face was added to its aggregate."""

    track_id: int
    detection: Detection
    identity: str | None  # the decision (threshold + margin) on the track's aggregate
    score: float
    margin: float
    claimed: str | None  # identity the track holds
    newly_claimed: bool  # the track was just named (or renamed) ``claimed``
    unknown: bool  # the track just became a confirmed unknown (reported once)
    faces: int = 0  # judgeable faces in the aggregate
    face_identity: str | None = None  # this one face's own decision (threshold + margin), for k-of-n votes
    candidates: tuple[tuple[str, float], ...] = ()  # the aggregate's top candidates, best first


@dataclass(frozen=True)
class EndedTrackSummary:
    """How a track ended. ``decision``: recognized, unknown or undecided (``reason`` says why). A track
    decided only at its end carries that decision (``newly_claimed`` / ``newly_unknown``)."""

    ended: EndedTrack
    identity: str | None
    best_score: float
    decision: str = "undecided"
    reason: str | None = None
    newly_claimed: bool = False
    newly_unknown: bool = False
    detection: Detection | None = None
    score: float = 0.0
    margin: float = 0.0
    faces: int = 0
    embedding: np.ndarray | None = None  # the unit quality-weighted mean the decision was taken on (face index)


@dataclass(frozen=True)
class MatchedFrame:
    tracked: TrackedFrame
    decisions: tuple[TrackDecision, ...]
    ended: tuple[EndedTrackSummary, ...]
    embeddings: tuple[FaceEmbedding, ...] = ()  # the frame's embedded faces (unknown visitors keep the best)


@dataclass(frozen=True)
class Shutdown:
    """Sentinel sent down the queues after the last message: each stage drains, passes it on, exits."""
