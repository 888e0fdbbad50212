"""One typed snapshot of a running daemon, read in one place (the runner) and shown three ways: the ``stats``
event, ``GET /v1/status`` and ``/metrics``. Counting happens where the work is (sources, stages); readers never
reach into a stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.match import Matcher


@dataclass(frozen=True)
class GalleryState:
    """The gallery the match stage uses now: swapped whole on a reload, never half."""

    matcher: Matcher
    threshold: float
    margin: float
    version: int
    state: str = "current"  # "stale": a shared gallery's database is lost; matching goes on with this one
    own: dict[str, float] = field(default_factory=dict)  # identities' own thresholds ("not this person")

    @property
    def identities(self) -> int:
        return len(getattr(self.matcher, "names", ()))


@dataclass(frozen=True)
class SourceStats:
    id: str
    uri: str
    kind: str
    live: bool
    frames_read: int
    frames_dropped: int
    frames_processed: int
    failed: bool


@dataclass(frozen=True)
class DaemonStats:
    uptime_s: float
    model_id: str
    sources: tuple[SourceStats, ...]
    stage_fps: dict[str, float]
    stage_busy: dict[str, float]
    stage_errors: dict[str, int]
    queues: dict[str, int]
    frames_detected: int
    frames_refreshed: int
    frames_skipped_on_stop: int
    faces_embedded: int
    events_sent: int
    events_dropped_zmq: int
    sink_errors: dict[str, int]
    frames_done: dict[str, int]
    latency: dict[str, float | None]
    gallery: GalleryState
    sink_counters: dict[str, Any] = field(default_factory=dict)  # the MQTT sink's: published, spooled, ...
    # What each network actually runs on: {"detector": {...}, "embedder": {...}} with runtime, provider,
    # device asked for and precision (a CUDA request that fell back to the CPU shows here, not only in a log).
    engines: dict[str, dict[str, str]] = field(default_factory=dict)

    def as_event(self) -> dict[str, Any]:
        """The body of the ``stats`` event (the events stage adds latency and the track counts)."""
        return {
            "uptime_s": self.uptime_s, "fps": self.stage_fps, "busy": self.stage_busy, "queues": self.queues,
            "frames_read": sum(s.frames_read for s in self.sources),
            "frames_dropped": sum(s.frames_dropped for s in self.sources),
            "frames_detected": self.frames_detected, "frames_refreshed": self.frames_refreshed,
            "faces_embedded": self.faces_embedded, "frames_skipped_on_stop": self.frames_skipped_on_stop,
            "stage_errors": {k: v for k, v in self.stage_errors.items() if v},
            "events_dropped_zmq": self.events_dropped_zmq, "frames_done": dict(self.frames_done),
            **self.sink_counters,
        }
