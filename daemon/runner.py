"""Wiring of the streaming daemon: sources -> detect -> track -> embed -> match -> events -> sinks.

One place starts and stops every thread. SIGINT/SIGTERM stop the sources, drain the queues, flush
the sinks and exit 0; SIGHUP reloads the gallery atomically. With only file sources the daemon
exits when they have all ended.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from daemon.config import Settings
from daemon.engines import check_gallery_model
from daemon.memory import pin_mmap_threshold
from daemon.outputs import Annotator, Timeline
from daemon.preflight import check_outputs, hold_gallery
from daemon.signals import stop_requested
from daemon.sinks import JsonlSink, StdoutSink, ZmqPublisher
from models.detector import DetectorSettings, MTCNNDetector
from models.embedder import load_embedder
from pipeline.detect import DetectSchedule, DetectStage
from pipeline.embed import EmbedStage
from pipeline.events import EventsStage
from pipeline.gallery import Gallery
from pipeline.gallery.operating_point import gallery_point
from pipeline.match import CentroidMatcher, Matcher, make_matcher
from pipeline.match_stage import FaceGate, MatchStage
from pipeline.names import clip
from pipeline.sources import SourceSpec, VideoSource, parse_source
from pipeline.track import TrackStage
from pipeline.track_decision import TrackJudge
from pipeline.types import Shutdown, SourceStatus

log = structlog.get_logger(__name__)


def _spec(uri: str, source_id: str | None = None) -> SourceSpec:
    """A missing video file is that source's failure (reported as its status), not the daemon's."""
    try:
        return parse_source(uri, source_id)
    except ValueError as exc:
        if not str(exc).startswith("video file not found"):
            raise
        path = Path(uri.removeprefix("file://")).expanduser()
        return SourceSpec(source_id or "_".join(path.stem.split()) or "file", str(path), "file", False)


class Daemon:
    """Build with settings (sources, gallery and sinks already resolved), then :meth:`run`."""

    def __init__(self, settings: Settings, gallery_path: Path | None,
                 source_options: dict[str, Any] | None = None) -> None:
        if not settings.sources and not settings.http.listen:
            raise ValueError("no sources: pass --source URI or set sources in the config")
        check_outputs(settings)  # every file it will write, before it writes any
        self.settings = settings
        p = settings.pipeline
        self.specs = [_spec(uri) for uri in settings.sources]
        ids = [s.id for s in self.specs]
        if len(set(ids)) != len(ids):
            self.specs = [_spec(uri, f"{s.id}-{i}") for i, (uri, s) in enumerate(zip(settings.sources, self.specs,
                                                                                    strict=True))]
        if (source_options or {}).get("live", any(s.live for s in self.specs)):
            # A daemon with live sources runs for days: keep its heap from fragmenting (daemon/memory.py).
            # File-only runs end, and keep glibc's faster dynamic threshold.
            pin_mmap_threshold()
        self.gallery_path = gallery_path
        matcher, threshold, margin, version, model_id = self._load_gallery()
        self._gallery_fd = hold_gallery(gallery_path) if gallery_path is not None else None
        e = settings.embedder
        name, flip = check_gallery_model(model_id, f"gallery {gallery_path}") if model_id else (e.model, e.flip)
        if p.threads_per_stage > 0:
            import torch

            torch.set_num_threads(p.threads_per_stage)
        self.embedder = load_embedder(name, e.runtime, e.device, flip, e.weights_path, e.allow_cpu_fallback,
                                      settings.cache_dir / "exports", e.batch_size, e.download, p.threads_per_stage)
        if model_id and self.embedder.model_id != model_id:
            raise ValueError(f"gallery {gallery_path} was built with {model_id}; this facestream embeds with "
                             f"{self.embedder.model_id}: rebuild it with 'facestream gallery build'")
        d = settings.detector
        # The scan's pyramid starts at 12/stream_min_face_size of the frame (0.3x at 40 px): that level is the
        # downscaled copy, so no separate downscale is needed (it would only add a resize).
        self.detector = MTCNNDetector(DetectorSettings(d.stream_min_face_size, tuple(d.thresholds), d.min_prob,
                                                       d.factor, min_face_in_frame=True, fast_resampling=True),
                                      runtime=d.runtime, threads=max(1, p.threads_per_stage),
                                      export_dir=settings.cache_dir / "exports")
        qs = p.queue_size
        self.q_frames: queue.Queue[Any] = queue.Queue(max(qs, 2) * len(self.specs))
        self.q_det: queue.Queue[Any] = queue.Queue(qs * 2)
        self.q_track: queue.Queue[Any] = queue.Queue(qs * 2)
        self.q_emb: queue.Queue[Any] = queue.Queue(qs * 2)
        self.q_match: queue.Queue[Any] = queue.Queue(qs * 4)
        self.sources = [VideoSource(s, self.q_frames, retry_initial_s=p.reconnect_initial_s,
                                    retry_max_s=p.reconnect_max_s,
                                    io_timeout_s=p.stall_timeout_by_source.get(s.id, p.stall_timeout_s),
                                    open_timeout_s=p.open_timeout_s, **(source_options or {}))
                        for s in self.specs]
        self.sinks: list[Any] = []
        s = settings.sinks
        if s.jsonl:
            self.sinks.append(JsonlSink(s.jsonl))
        if s.zmq:
            self.sinks.append(ZmqPublisher(s.zmq, s.zmq_hwm, secret_key=s.zmq_secret_key, insecure=s.insecure))
        if s.stdout:
            self.sinks.append(StdoutSink())
        self.timeline = Timeline()
        observers: list[Any] = [self.timeline]
        self.annotator: Annotator | None = None
        if s.annotate_dir:
            self.annotator = Annotator(Path(s.annotate_dir), {})
            observers.append(self.annotator)
        self._stop = threading.Event()
        # Set only when a stop was asked for (signal, request_stop): the detect stage then lets undetected
        # frames go. A file that simply ended is processed to its last frame.
        self._interrupted = threading.Event()
        self.detect = DetectStage(self.q_frames, self.q_det, self.detector,
                                  DetectSchedule(d.scan_interval_s, d.refresh_interval_s, p.scene_cut_threshold),
                                  d.batch, stopping=self._interrupted)
        self.track = TrackStage(self.q_det, self.q_track, iou_threshold=p.iou_threshold, max_age_s=p.max_track_age_s,
                                embed_interval_s=p.embed_interval_s, min_embed_px=p.min_embed_px,
                                confirm_hits=p.confirm_hits,
                                confirm_prob=p.confirm_prob, max_embeds=p.max_embeds_per_track)
        self.embed = EmbedStage(self.q_track, self.q_emb, self.embedder)
        self.match = MatchStage(self.q_emb, self.q_match, matcher, threshold, margin,
                                TrackJudge(p.min_faces, p.unknown_after), version,
                                FaceGate(p.min_embed_px, 0.2, p.min_sharpness, d.min_prob),
                                face_votes=settings.door.audit is not None)
        self.events = EventsStage(self.q_match, self.sinks, self.embedder.model_id, lambda: self.match.gallery_version,
                                  p.cooldown_s, self.stats, p.stats_interval_s, observers)
        self.stages = [self.detect, self.track, self.embed, self.match, self.events]
        self.door = None
        if settings.door.audit:
            from daemon.door import DoorController

            dc = settings.door
            self.door = DoorController(Path(dc.audit), lambda: self.match._state[1:3], dc.votes_k, dc.votes_n,
                                       dc.cooldown_s, list(dc.command) or None, dc.zmq_req, dc.action_timeout_s,
                                       self.events.publish)
            self.events.observers.append(self.door)
        a = settings.attendance
        if a.db:
            from daemon.attendance import AttendanceBook, AttendanceSink, parse_sessions, read_roster

            roster = read_roster(a.roster) if a.roster else []
            # Last in the list: its attendance.marked follows the face.recognized it came from in every sink.
            self.sinks.append(AttendanceSink(AttendanceBook(Path(a.db), a.site), roster, parse_sessions(a.sessions),
                                             self.events.publish))
        self._reload = threading.Event()
        self._reload_lock = threading.Lock()
        self._started = 0.0
        # The HTTP API's parts (daemon/http_wiring.py attaches them when http.listen is set).
        self.http: Any = None
        self.live_view: Any = None
        self.event_hub: Any = None
        self.metrics: Any = None

    def queues(self) -> dict[str, queue.Queue[Any]]:
        return {"frames": self.q_frames, "detected": self.q_det, "tracked": self.q_track, "embedded": self.q_emb,
                "matched": self.q_match}

    @property
    def started_monotonic(self) -> float:
        return self._started or time.monotonic()

    # ---- gallery ---------------------------------------------------------------------------
    def _load_gallery(self) -> tuple[Matcher, float, float, int, str | None]:
        p = self.settings.pipeline
        if self.gallery_path is None:
            log.warning("no_gallery_every_face_is_unknown")
            return CentroidMatcher([]), p.threshold or 1.0, p.margin or 0.0, 0, None
        g = Gallery.open(self.gallery_path)
        try:
            people = g.identities()
            kind = self.settings.gallery.matcher
            matcher = make_matcher(kind, people, self.settings.gallery.augment) if people else CentroidMatcher([])
            point = gallery_point(g, people, kind, self.settings.gallery.target_far, p.threshold, p.margin)
            log.info("operating_point", threshold=point.threshold, margin=point.margin, source=point.source,
                     identities=len(people))
            if bad := g.bad_names():
                log.warning("identity_names_not_allowed", names=[clip(n) for n in bad[:10]], count=len(bad),
                            hint="names from before the name rule still match; rename each with 'facestream gallery "
                            "rename OLD NEW'")
            return matcher, point.threshold, point.margin, g.version, g.model_id
        finally:
            g.close()

    def reload_gallery(self) -> None:
        """Swap in the gallery as it is on disk now; a broken file leaves the old one in use. SIGHUP and the HTTP
        API both call this: one reload at a time, so an older read never replaces a newer one."""
        with self._reload_lock:
            try:
                matcher, threshold, margin, version, model_id = self._load_gallery()
            except Exception as exc:
                log.error("gallery_reload_failed", error=str(exc))
                return
            if model_id and model_id != self.embedder.model_id:
                log.error("gallery_reload_refused_model_changed", gallery_model=model_id,
                          running=self.embedder.model_id)
                return
            self.match.swap(matcher, threshold, margin, version)
        log.info("gallery_reloaded", version=version)

    # ---- stats -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        elapsed = max(1e-6, time.monotonic() - self._started)
        zmq = next((s for s in self.sinks if isinstance(s, ZmqPublisher)), None)
        return {
            "uptime_s": round(elapsed, 1),
            "fps": {st.name: round(st.processed / elapsed, 2) for st in self.stages},
            "busy": {st.name: round(st.busy_s / elapsed, 3) for st in self.stages},
            "queues": {k: q.qsize() for k, q in self.queues().items()},
            "frames_read": sum(s.frames_read for s in self.sources),
            "frames_dropped": sum(s.frames_dropped for s in self.sources),
            "frames_detected": self.detect.frames_detected,
            "frames_refreshed": self.detect.frames_refreshed,
            "faces_embedded": self.embed.faces_embedded,
            "frames_skipped_on_stop": self.detect.frames_skipped_on_stop,
            "stage_errors": {st.name: st.errors for st in self.stages if st.errors},
            "events_dropped_zmq": zmq.dropped if zmq else 0,
            "frames_done": dict(self.events.frames_done),
        }

    # ---- lifecycle -------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, *_: Any) -> None:
        """First SIGINT/SIGTERM: drain and exit 0. A second one: exit at once (130), drain or not."""
        if signum is not None and self._stop.is_set():
            log.error("second_signal_exiting_now", signal=signum)
            for sink in self.sinks:  # JSONL lines are already flushed per event; this only fsyncs
                with contextlib.suppress(Exception):
                    sink.close()
            os._exit(130)
        self._stop.set()

    def request_reload(self, *_: Any) -> None:
        self._reload.set()

    def run(self, install_signals: bool = True) -> int:
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            if hasattr(signal, "SIGHUP"):
                signal.signal(signal.SIGHUP, self.request_reload)
            if (early := stop_requested()) is not None:  # a SIGTERM/SIGINT while it was starting
                log.info("stop_requested_during_start_up", signal=early)
                self._stop.set()
        zmq = next((s for s in self.sinks if isinstance(s, ZmqPublisher)), None)
        wait = self.settings.sinks.zmq_wait_subscriber_s
        if zmq is not None and wait > 0 and not zmq.wait_for_subscriber(wait):
            log.warning("no_zmq_subscriber_yet", waited_s=wait)
        self._started = time.monotonic()
        for st in self.stages:
            st.start()
        for src in self.sources:
            src.start()
        if self.http is not None:
            self.http.start()
            log.info("http_listening", url=self.http.url)
        log.info("daemon_started", sources=[s.display_uri for s in self.specs], model=self.embedder.model_id)
        # Files end by themselves; a daemon with no source at all (facestream serve) runs until stopped.
        ends_by_itself = bool(self.specs) and all(not s.live for s in self.specs)
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self.reload_gallery()
            if ends_by_itself and not any(s.is_alive() for s in self.sources):
                break
            self._stop.wait(0.1)
        return self.shutdown()

    def shutdown(self) -> int:
        """Stop the sources, drain the stages within ``pipeline.stop_timeout_s`` (when interrupted, frames
        not yet detected are let go), close the sinks; 0 unless a stage did not finish or every source
        failed."""
        interrupted = self._stop.is_set()
        self._stop.set()
        if interrupted:
            self._interrupted.set()  # from here on the detect stage lets undetected frames go
        deadline = time.monotonic() + (self.settings.pipeline.stop_timeout_s if interrupted else 600.0)
        running = [src for src in self.sources if src.is_alive()]
        for src in self.sources:
            src.stop()
        for src in self.sources:
            src.join(max(0.0, min(1.0, deadline - time.monotonic())))
        try:
            for src in running:
                # Tell the stages this stream is over: its open tracks end and the status is published.
                self.q_frames.put(SourceStatus(src.source_id, "stopped", "daemon stopping", time.time(),
                                               src.frames_read, src.frames_dropped),
                                  timeout=max(0.1, deadline - time.monotonic()))
            self.q_frames.put(Shutdown(), timeout=max(0.1, deadline - time.monotonic()))
        except queue.Full:
            log.error("shutdown_queue_full")
        ok = all(st.join(max(0.1, deadline - time.monotonic())) for st in self.stages)
        if not ok:
            log.error("stages_not_drained", alive=[st.name for st in self.stages if not st.join(0)])
        if self.door is not None:
            self.door.close()  # waits for a running door action, bounded by its timeout
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.error("sink_close_failed", sink=type(sink).__name__, error=str(exc))
        if self.annotator:
            self.annotator.close()
        if self.settings.sinks.timeline_csv:
            self.timeline.write(Path(self.settings.sinks.timeline_csv))
        if self.http is not None and not self.http.stop():
            log.warning("http_server_not_stopped_in_time")
        failed = [s.source_id for s in self.sources if s.failed]
        all_failed = bool(self.sources) and len(failed) == len(self.sources)
        if self._gallery_fd is not None:
            os.close(self._gallery_fd)  # and its advisory lock
            self._gallery_fd = None
        log.info("daemon_stopped", drained=ok, events=self.events.events_sent, failed_sources=failed)
        if all_failed:
            log.error("every_source_failed", sources=failed)
        return 0 if ok and not all_failed else 1
