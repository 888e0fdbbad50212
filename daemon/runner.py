"""Wiring of the streaming daemon: sources -> detect -> track -> embed -> match -> events -> sinks.

One place starts and stops every thread. SIGINT/SIGTERM stop the sources, drain the queues, flush
the sinks and exit 0; SIGHUP reloads the gallery atomically. With only file sources the daemon
exits when they have all ended.

What the rest of the daemon may use is the face below (``snapshot``, ``gallery_state``, ``face_gate``,
``publish``, ``reload_gallery``, ``add_sink``, ``add_observer``, ``add_annotator``, ``add_server``): profiles,
the HTTP API and the benchmarks are given that, never a stage.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import structlog

from daemon.config import Settings
from daemon.config.outputs import check_outputs
from daemon.engines import load_gallery_state, stream_detector, stream_embedder
from daemon.memory import pin_mmap_threshold
from daemon.signals import stop_requested
from daemon.sinks.jsonl import JsonlSink
from daemon.sinks.stdout import StdoutSink
from daemon.sinks.zeromq import ZmqPublisher
from daemon.stats import DaemonStats, GalleryState, SourceStats
from pipeline.detect import DetectSchedule, DetectStage
from pipeline.embed import EmbedStage
from pipeline.events import EventsStage, FaceAnnotator, FrameObserver, Sink
from pipeline.gallery.follow import GalleryFollower
from pipeline.gallery.store import is_url
from pipeline.match_stage import FaceGate, MatchStage
from pipeline.sources import SourceSpec, VideoSource, parse_source
from pipeline.track import TrackStage
from pipeline.track_decision import TrackJudge
from pipeline.types import Shutdown, SourceStatus

log = structlog.get_logger(__name__)


class Server(Protocol):
    """Something that serves while the daemon runs (the HTTP API), started after the stages, stopped last."""

    url: str

    def start(self) -> None: ...

    def stop(self) -> bool: ...


def _spec(uri: str, source_id: str | None = None) -> SourceSpec:
    """A missing video file is that source's failure (reported as its status), not the daemon's."""
    try:
        return parse_source(uri, source_id)
    except ValueError as exc:
        if not str(exc).startswith("video file not found"):
            raise
        path = Path(uri.removeprefix("file://")).expanduser()
        return SourceSpec(source_id or "_".join(path.stem.split()) or "file", str(path), "file", False)


def _specs(uris: list[str]) -> list[SourceSpec]:
    specs = [_spec(uri) for uri in uris]
    if len({s.id for s in specs}) != len(specs):  # the same file twice: number them
        specs = [_spec(uri, f"{s.id}-{i}") for i, (uri, s) in enumerate(zip(uris, specs, strict=True))]
    return specs


def hold_gallery(path: Path) -> int | None:
    """An advisory lock on the gallery for this daemon's life (the fd to keep open). A second daemon on the
    same file is told: the two do not see each other's API changes (SIGHUP reloads)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("gallery_shared_with_another_daemon", gallery=str(path),
                    detail="another facestream daemon uses this gallery: changes made through one reach the other "
                    "only when it is reloaded (SIGHUP)")
    return fd


def _sinks(settings: Settings, sources: list[str]) -> list[Any]:
    s = settings.sinks
    out: list[Any] = []
    if settings.mqtt.url:
        from daemon.sinks.mqtt import MqttSink

        out.append(MqttSink(settings.mqtt, settings.mqtt.spool, sources))
    if s.jsonl:
        out.append(JsonlSink(s.jsonl, rotate_daily=settings.retention.events_days is not None))
    if s.zmq:
        out.append(ZmqPublisher(s.zmq, s.zmq_hwm, secret_key=s.zmq_secret_key, insecure=s.insecure))
    if s.stdout:
        out.append(StdoutSink())
    return out


class Daemon:
    """Build with settings (sources, gallery and sinks already resolved), then :meth:`run`."""

    def __init__(self, settings: Settings, gallery_path: Path | str | None,
                 source_options: dict[str, Any] | None = None) -> None:
        if not settings.sources and not settings.http.listen:
            raise ValueError("no sources: pass --source URI or set sources in the config")
        check_outputs(settings)  # every file it will write, before it writes any
        self.settings = settings
        self.specs = _specs(settings.sources)
        if (source_options or {}).get("live", any(s.live for s in self.specs)):
            # A daemon with live sources runs for days: keep its heap from fragmenting (daemon/memory.py).
            # File-only runs end, and keep glibc's faster dynamic threshold.
            pin_mmap_threshold()
        if gallery_path is not None and not is_url(gallery_path):
            gallery_path = Path(gallery_path)
        self.gallery_path = gallery_path
        state, model_id = load_gallery_state(settings, gallery_path)
        self._gallery_fd = hold_gallery(gallery_path) if isinstance(gallery_path, Path) else None
        self.embedder = stream_embedder(settings, model_id, f"gallery {gallery_path}")
        self.detector = stream_detector(settings)
        self._queues = self._make_queues()
        p = settings.pipeline
        self.sources = [VideoSource(s, self._queues["frames"], retry_initial_s=p.reconnect_initial_s,
                                    retry_max_s=p.reconnect_max_s,
                                    io_timeout_s=p.stall_timeout_by_source.get(s.id, p.stall_timeout_s),
                                    open_timeout_s=p.open_timeout_s, **(source_options or {}))
                        for s in self.specs]
        self._sinks: list[Any] = _sinks(settings, [s.id for s in self.specs])
        self._stop = threading.Event()
        # Set only when a stop was asked for (signal, request_stop): the detect stage then lets undetected
        # frames go. A file that simply ended is processed to its last frame.
        self._interrupted = threading.Event()
        self._build_stages(state)
        self._servers: list[Server] = []
        self._tasks: list[Any] = []
        self._reload = threading.Event()
        self._reload_lock = threading.Lock()
        self._started = 0.0
        # A gallery in a database is followed live: every host's writes reach this matcher within follow_max_s.
        self._follower = GalleryFollower.for_location(gallery_path, self.reload_gallery,
                                                      settings.gallery.follow_max_s)

    def _make_queues(self) -> dict[str, queue.Queue[Any]]:
        qs = self.settings.pipeline.queue_size
        return {"frames": queue.Queue(max(qs, 2) * len(self.specs)), "detected": queue.Queue(qs * 2),
                "tracked": queue.Queue(qs * 2), "embedded": queue.Queue(qs * 2), "matched": queue.Queue(qs * 4)}

    def _build_stages(self, state: GalleryState) -> None:
        """Each stage from its own part of the settings."""
        p, d, q = self.settings.pipeline, self.settings.detector, self._queues
        self._detect = DetectStage(q["frames"], q["detected"], self.detector,
                                   DetectSchedule(d.scan_interval_s, d.refresh_interval_s, p.scene_cut_threshold),
                                   d.batch, stopping=self._interrupted, background_scans=d.background_scans)
        self._track = TrackStage(q["detected"], q["tracked"], iou_threshold=p.iou_threshold,
                                 max_age_s=p.max_track_age_s, embed_interval_s=p.embed_interval_s,
                                 min_embed_px=p.min_embed_px, confirm_hits=p.confirm_hits, confirm_prob=p.confirm_prob,
                                 max_embeds=p.max_embeds_per_track)
        self._embed = EmbedStage(q["tracked"], q["embedded"], self.embedder)
        self._match = MatchStage(q["embedded"], q["matched"], state.matcher, state.threshold, state.margin,
                                 TrackJudge(p.min_faces, p.unknown_after), state.version,
                                 FaceGate(p.min_embed_px, 0.2, p.min_sharpness, d.min_prob),
                                 face_votes=self.settings.door.audit is not None, own=state.own)
        self._events = EventsStage(q["matched"], self._sinks, self.embedder.model_id,
                                   lambda: self._match.gallery_version, p.cooldown_s, self.stats, p.stats_interval_s,
                                   [])
        self._stages = [self._detect, self._track, self._embed, self._match, self._events]

    # ---- the face the rest of the daemon uses ------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def started_monotonic(self) -> float:
        return self._started or time.monotonic()

    def add_sink(self, sink: Sink, first: bool = False) -> None:
        """Events go to ``sink`` too; ``first``: before the others (a slow sink later cannot delay it)."""
        self._sinks.insert(0, sink) if first else self._sinks.append(sink)

    def add_observer(self, observer: FrameObserver) -> None:
        """``observer`` sees every processed frame with its decisions; its ``close()`` runs at shutdown."""
        self._events.observers.append(observer)

    def add_annotator(self, annotator: FaceAnnotator) -> None:
        """``annotator`` sees every processed frame before its events go out and adds fields to its face
        events (a track's ``live_score``)."""
        self._events.annotators.append(annotator)

    def add_server(self, server: Server) -> None:
        self._servers.append(server)

    def add_task(self, task: Any) -> None:
        """Background work for the daemon's life (retention): ``start()`` after the stages, ``stop()`` at the end."""
        self._tasks.append(task)

    @property
    def servers(self) -> tuple[Server, ...]:
        return tuple(self._servers)

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        """An event from outside the pipeline (a door decision, a gallery change) to every sink."""
        self._events.publish(topic, body)

    def gallery_state(self) -> GalleryState:
        matcher, threshold, margin, version = self._match.state()
        return GalleryState(matcher, threshold, margin, version,
                            self._follower.state if self._follower else "current", self._match.own_thresholds())

    @property
    def face_gate(self) -> FaceGate:
        """The rule that decides whether a face is good enough to be judged at all."""
        return self._match.gate

    def reload_gallery(self) -> bool:
        """Swap in the gallery as it is stored now; a broken file or a lost database leaves the old one in use
        (False). SIGHUP, the HTTP API and the follower of a shared gallery call this: one reload at a time, so
        an older read never replaces a newer one."""
        with self._reload_lock:
            try:
                state, model_id = load_gallery_state(self.settings, self.gallery_path)
            except Exception as exc:
                log.error("gallery_reload_failed", error=" ".join(str(exc).split())[:300])
                return False
            if model_id and model_id != self.embedder.model_id:
                log.error("gallery_reload_refused_model_changed", gallery_model=model_id,
                          running=self.embedder.model_id)
                return False
            self._match.swap(state.matcher, state.threshold, state.margin, state.version, state.own)
        log.info("gallery_reloaded", version=state.version)
        return True

    def snapshot(self) -> DaemonStats:
        """Every counter of the running daemon, read once."""
        elapsed = max(1e-6, time.monotonic() - self._started)
        zmq = next((s for s in self._sinks if isinstance(s, ZmqPublisher)), None)
        ev = self._events
        return DaemonStats(
            uptime_s=round(elapsed, 1), model_id=self.embedder.model_id,
            sources=tuple(SourceStats(spec.id, spec.display_uri, spec.kind, src.live, src.frames_read,
                                      src.frames_dropped, ev.frames_processed.get(spec.id, 0), src.failed)
                          for spec, src in zip(self.specs, self.sources, strict=True)),
            stage_fps={st.name: round(st.processed / elapsed, 2) for st in self._stages},
            stage_busy={st.name: round(st.busy_s / elapsed, 3) for st in self._stages},
            stage_errors={st.name: st.errors for st in self._stages},
            queues={k: q.qsize() for k, q in self._queues.items()},
            frames_detected=self._detect.frames_detected, frames_refreshed=self._detect.frames_refreshed,
            frames_skipped_on_stop=self._detect.frames_skipped_on_stop, faces_embedded=self._embed.faces_embedded,
            events_sent=ev.events_sent, events_dropped_zmq=zmq.dropped if zmq else 0,
            sink_errors=dict(ev.sink_errors), frames_done=dict(ev.frames_done), latency=ev.latency(),
            gallery=self.gallery_state(),
            sink_counters={k: v for s in self._sinks if hasattr(s, "counters") for k, v in s.counters().items()},
            engines=self.engines())

    def engines(self) -> dict[str, dict[str, str]]:
        """The runtime and execution provider each network actually got (ONNX Runtime's, or torch's device)."""
        s = self.settings
        return {"detector": {"runtime": self.detector.runtime, "provider": self.detector.provider,
                             "device": s.detector.device, "precision": "fp32"},
                "embedder": {"runtime": self.embedder.runner.runtime, "provider": self.embedder.provider,
                             "device": s.embedder.device, "precision": self.embedder.precision}}

    def stats(self) -> dict[str, Any]:
        """The ``stats`` event's body (the events stage asks for it every ``pipeline.stats_interval_s``)."""
        return self.snapshot().as_event()

    def latency_samples(self, source_id: str) -> list[float]:
        """Capture-to-events latencies (ms) of the source's recent frames, oldest first."""
        return list(self._events.latency_by_source.get(source_id, ()))

    # ---- lifecycle -------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, *_: Any) -> None:
        """First SIGINT/SIGTERM: drain and exit 0. A second one: exit at once (130), drain or not."""
        if signum is not None and self._stop.is_set():
            log.error("second_signal_exiting_now", signal=signum)
            for sink in self._sinks:  # JSONL lines are already flushed per event; this only fsyncs. Sinks
                abort = getattr(sink, "abort", None)  # that wait (actions, MQTT, ZeroMQ linger) are left as they are:
                if abort is not None:  # the MQTT spool is committed per event and is resent at the next start
                    with contextlib.suppress(Exception):
                        abort()
            os._exit(130)
        if signum is not None:
            log.info("stop_requested", signal=signum)  # the operator sees the drain begin; a second signal cuts it
        self._stop.set()

    def request_reload(self, *_: Any) -> None:
        self._reload.set()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self.request_reload)
        if (early := stop_requested()) is not None:  # a SIGTERM/SIGINT while it was starting
            log.info("stop_requested_during_start_up", signal=early)
            self._stop.set()

    def run(self, install_signals: bool = True) -> int:
        if install_signals and threading.current_thread() is threading.main_thread():
            self._install_signals()
        zmq = next((s for s in self._sinks if isinstance(s, ZmqPublisher)), None)
        wait = self.settings.sinks.zmq_wait_subscriber_s
        if zmq is not None and wait > 0 and not zmq.wait_for_subscriber(wait):
            log.warning("no_zmq_subscriber_yet", waited_s=wait)
        self._started = time.monotonic()
        for st in self._stages:
            st.start()
        for src in self.sources:
            src.start()
        for server in self._servers:
            server.start()
            log.info("http_listening", url=server.url)
        for task in self._tasks:
            task.start()
        if self._follower is not None:
            self._follower.start()
        log.info("daemon_started", sources=[s.display_uri for s in self.specs], model=self.embedder.model_id,
                 engines=self.engines())
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

    def _drain(self, interrupted: bool) -> bool:
        """Stop the sources and let the stages finish within ``pipeline.stop_timeout_s`` when interrupted
        (frames not yet detected are let go), or to their end when the files simply ended."""
        deadline = time.monotonic() + (self.settings.pipeline.stop_timeout_s if interrupted else 600.0)
        running = [src for src in self.sources if src.is_alive()]
        for src in self.sources:
            src.stop()
        for src in self.sources:
            src.join(max(0.0, min(1.0, deadline - time.monotonic())))
        frames = self._queues["frames"]
        try:
            for src in running:
                # Tell the stages this stream is over: its open tracks end and the status is published.
                frames.put(SourceStatus(src.source_id, "stopped", "daemon stopping", time.time(), src.frames_read,
                                        src.frames_dropped), timeout=max(0.1, deadline - time.monotonic()))
            frames.put(Shutdown(), timeout=max(0.1, deadline - time.monotonic()))
        except queue.Full:
            log.error("shutdown_queue_full")
        ok = all(st.join(max(0.1, deadline - time.monotonic())) for st in self._stages)
        if not ok:
            log.error("stages_not_drained", alive=[st.name for st in self._stages if not st.join(0)])
        return ok

    def _close_all(self) -> None:
        """Observers (a door waits for its running action, bounded by its timeout; a timeline writes its CSV),
        then the sinks, each once; then the servers, so event streams got the final events."""
        closed: set[int] = set()
        for part in [*self._events.observers, *self._sinks]:
            close = getattr(part, "close", None)
            if close is None or id(part) in closed:
                continue
            closed.add(id(part))
            try:
                close()
            except Exception as exc:
                log.error("sink_close_failed", sink=type(part).__name__, error=str(exc))
        for server in self._servers:
            if not server.stop():
                log.warning("http_server_not_stopped_in_time")
        for task in self._tasks:
            task.stop()
        if self._gallery_fd is not None:
            os.close(self._gallery_fd)  # and its advisory lock
            self._gallery_fd = None

    def shutdown(self) -> int:
        """Drain, close everything; 0 unless a stage did not finish or every source failed."""
        interrupted = self._stop.is_set()
        self._stop.set()
        if self._follower is not None:
            self._follower.stop()
        if interrupted:
            self._interrupted.set()  # from here on the detect stage lets undetected frames go
        ok = self._drain(interrupted)
        self._close_all()
        failed = [s.source_id for s in self.sources if s.failed]
        all_failed = bool(self.sources) and len(failed) == len(self.sources)
        log.info("daemon_stopped", drained=ok, events=self._events.events_sent, failed_sources=failed)
        if all_failed:
            log.error("every_source_failed", sources=failed)
        return 0 if ok and not all_failed else 1
