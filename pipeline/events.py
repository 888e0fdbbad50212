"""Events stage: turns matched frames into JSON events (``schema: 1``) and hands them to the sinks.

Rules: a recognized event when a track is named (pipeline.track_decision), during the track or at
its end, at most once per identity per source within the cooldown (so a track that flickers apart does
not notify twice); an unknown event at most once per track; track.ended for every track, saying how it
was decided (or why not); source.status passed through; stats periodically, with decided and
undecided track counts. Cooldowns use media time for files and capture time for live sources, so a file
analysed twice yields the same events.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import structlog

from models.detection import Detection
from pipeline.stage import Stage
from pipeline.types import EndedTrack, Frame, MatchedFrame, SourceStatus, frame_time

SCHEMA = 1
log = structlog.get_logger(__name__)


class Sink(Protocol):
    def send(self, topic: str, body: dict[str, Any]) -> Any: ...


class FrameObserver(Protocol):
    """Sees every processed frame with its decisions (timeline, annotated video)."""

    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None: ...

    def source_ended(self, source_id: str) -> None: ...


class FaceAnnotator(Protocol):
    """Sees each frame before its events go out and adds fields to its face events (a track's live score)."""

    def annotate(self, msg: MatchedFrame) -> None: ...

    def fields(self, source_id: str, track_id: int) -> dict[str, Any]: ...

    def source_ended(self, source_id: str) -> None: ...


def _now() -> tuple[str, float]:
    t = time.time()
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), t


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


class EventsStage(Stage):
    name = "events"
    accepts = (MatchedFrame,)

    def __init__(self, inq: queue.Queue[Any], sinks: list[Sink], model_id: str,
                 gallery_version: Callable[[], int], cooldown_s: float = 10.0,
                 stats: Callable[[], dict[str, Any]] | None = None, stats_interval_s: float = 10.0,
                 observers: list[FrameObserver] | None = None) -> None:
        super().__init__(inq, None)
        self.sinks = sinks
        self.model_id = model_id
        self.gallery_version = gallery_version
        self.cooldown_s = cooldown_s
        self.stats_fn = stats
        self.stats_interval_s = stats_interval_s
        self.observers = observers or []
        self.annotators: list[FaceAnnotator] = []
        self.events_sent = 0
        self.latency_ms: deque[float] = deque(maxlen=2000)
        self.latency_by_source: dict[str, deque[float]] = {}  # capture -> all events out, per source
        self.frames_processed: Counter[str] = Counter()  # per source, counted (a live index skips drops)
        self._last_recognized: dict[tuple[str, str], float] = {}
        self._claims: dict[str, dict[int, str | None]] = {}
        self._last_stats = time.monotonic()
        self.sink_errors: Counter[str] = Counter()  # by sink class: one failing sink never stops the others
        self.frames_done: dict[str, int] = {}  # per source: frames 0..n-1 have all their events published
        self.tracks_decided: Counter[str] = Counter()  # recognized / unknown
        self.tracks_undecided: Counter[str] = Counter()  # by reason

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        iso, epoch = _now()
        full = {"schema": SCHEMA, "event_id": uuid.uuid4().hex, "topic": topic, "time": iso, "epoch": round(epoch, 3),
                **body}
        for s in self.sinks:
            try:
                s.send(topic, full)
            except Exception as exc:  # stdout closed, disk full: count it, keep the other sinks fed
                name = type(s).__name__
                if not self.sink_errors[name]:
                    log.error("sink_failed", sink=name, error=str(exc))
                self.sink_errors[name] += 1
        self.events_sent += 1

    def handle(self, msg: Any) -> None:
        super().handle(msg)
        self._maybe_stats()

    def on_status(self, msg: SourceStatus) -> None:
        self.publish("source.status", {"source": msg.source_id, "status": msg.status, "detail": msg.detail,
                                       "frames_read": msg.frames_read, "frames_dropped": msg.frames_dropped})
        if msg.status in ("eof", "error", "stopped"):
            for o in [*self.annotators, *self.observers]:
                o.source_ended(msg.source_id)

    def process(self, msg: MatchedFrame) -> None:
        self._frame(msg)

    def _face_body(self, frame: Frame, track_id: int, det: Detection | None, identity: str | None, score: float,
                   margin: float, faces: int, at: EndedTrack | None = None) -> dict[str, Any]:
        """``at``: a track decided at its end is reported at its last frame, not at the frame that ended it
        (after a shot cut that frame shows someone else)."""
        index, pts = (frame.index, frame.pts) if at is None else (at.last_frame, at.last_time if frame.pts is not None
                                                                   else None)
        extra: dict[str, Any] = {}
        for a in self.annotators:
            extra.update(a.fields(frame.source_id, track_id))
        return {
            "source": frame.source_id, "frame": index, "pts": _r(pts, 3), "track_id": track_id,
            "identity": identity, "score": _r(score), "margin": _r(margin),
            "bbox": [round(v, 1) for v in det.box] if det is not None else None,
            "det_prob": _r(det.prob) if det is not None else None, "faces": faces,
            "model": self.model_id, "gallery_version": self.gallery_version(), **extra,
        }

    def _recognized(self, frame: Frame, t: float, body: dict[str, Any], record: bool = True) -> None:
        key = (frame.source_id, body["identity"])
        last = self._last_recognized.get(key)
        if last is None or t - last >= self.cooldown_s:
            self.publish("face.recognized", body)
        if record:
            self._last_recognized[key] = t

    def _frame(self, msg: MatchedFrame) -> None:
        frame = msg.tracked.frame
        src = frame.source_id
        t = frame_time(frame)
        claims = self._claims.setdefault(src, {})
        for a in self.annotators:
            a.annotate(msg)
        if msg.tracked.scene_cut:
            # A new shot is a new appearance: announce people again even within the cooldown.
            for key in [k for k in self._last_recognized if k[0] == src]:
                del self._last_recognized[key]
        for d in msg.decisions:
            claims[d.track_id] = d.claimed
            if d.newly_claimed and d.claimed is not None:
                self._recognized(frame, t, self._face_body(frame, d.track_id, d.detection, d.claimed, d.score,
                                                           d.margin, d.faces))
            if d.unknown:
                self.publish("face.unknown", self._face_body(frame, d.track_id, d.detection, None, d.score, d.margin,
                                                             d.faces))
        for e in msg.ended:  # tracks decided only now, at their end
            if e.newly_claimed and e.identity is not None:
                claims[e.ended.track_id] = e.identity
                # A track ended by a shot cut belongs to the old shot: it starts no cooldown in the new one.
                self._recognized(frame, e.ended.last_time, self._face_body(
                    frame, e.ended.track_id, e.detection, e.identity, e.score, e.margin, e.faces, e.ended),
                    record=not msg.tracked.scene_cut)
            if e.newly_unknown:
                body = self._face_body(frame, e.ended.track_id, e.detection, None, e.score, e.margin, e.faces,
                                       e.ended)
                self.publish("face.unknown", {**body, "reason": e.reason} if e.reason else body)
        for o in self.observers:
            o.observe(msg, claims)
        for e in msg.ended:
            claims.pop(e.ended.track_id, None)
            if e.identity is not None and not msg.tracked.scene_cut:
                # A claimed identity stays "present" until its track ends: cooldown counts from here.
                self._last_recognized[(src, e.identity)] = max(self._last_recognized.get((src, e.identity), t),
                                                               e.ended.last_time)
            if e.decision == "undecided":
                self.tracks_undecided[e.reason or "unknown reason"] += 1
            else:
                self.tracks_decided[e.decision] += 1
            self.publish("track.ended", {
                "source": src, "track_id": e.ended.track_id, "identity": e.identity, "best_score": _r(e.best_score),
                "decision": e.decision, "undecided_reason": e.reason if e.decision == "undecided" else None,
                "faces_judged": e.faces, "sized_s": e.ended.sized_s,
                "first_frame": e.ended.first_frame, "last_frame": e.ended.last_frame,
                "first_time": _r(e.ended.first_time, 3), "last_time": _r(e.ended.last_time, 3),
                "frames_seen": e.ended.frames_seen, "model": self.model_id,
            })
        ms = 1000.0 * (time.time() - frame.capture_time)
        self.latency_ms.append(ms)
        self.latency_by_source.setdefault(src, deque(maxlen=20000)).append(ms)
        self.frames_processed[src] += 1
        self.frames_done[src] = max(self.frames_done.get(src, 0), frame.index + 1)

    def latency(self) -> dict[str, float | None]:
        if not self.latency_ms:
            return {"p50_ms": None, "p99_ms": None}
        arr = np.asarray(self.latency_ms)
        return {"p50_ms": round(float(np.percentile(arr, 50)), 1), "p99_ms": round(float(np.percentile(arr, 99)), 1)}

    def _maybe_stats(self, force: bool = False) -> None:
        if self.stats_fn is None:
            return
        now = time.monotonic()
        if force or now - self._last_stats >= self.stats_interval_s:
            self._last_stats = now
            self.publish("stats", {**self.stats_fn(), "latency": self.latency(),
                                   "sink_errors": dict(self.sink_errors),
                                   "tracks_decided": dict(self.tracks_decided),
                                   "tracks_undecided": dict(self.tracks_undecided)})

    def flush(self) -> None:
        self._maybe_stats(force=True)
