"""Attaches the HTTP API to a built daemon: a live view and metrics (frame observers and sinks), an event hub
(a sink) and the server, bound at once so a port in use fails before the pipeline starts.

Only a daemon serving HTTP gets these parts, so the hot path of one that does not is unchanged. The
daemon starts the server with its stages and stops it after the sinks have closed, so event streams
receive the final events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.memory import pin_mmap_threshold
from daemon.runner import Daemon
from pipeline.gallery.store import location_name


def attach_http(daemon: Daemon, unknowns: Any = None, drift: Any = None, attendance: Any = None) -> Daemon:
    """``unknowns``: the daemon's unknown visitors (``daemon/profiles/unknowns.py``), served under /v1/unknowns;
    ``drift``: its drift watch (``daemon/profiles/drift.py``: ``GET /v1/identities/{name}``, ``/metrics``);
    ``attendance``: its attendance sink, whose book ``GET /v1/attendance/today`` reads."""
    from daemon.http.app import make_app
    from daemon.http.audit import ApiAudit
    from daemon.http.context import HttpContext
    from daemon.http.event_hub import EventHub
    from daemon.http.faces import DaemonLink, FaceService
    from daemon.http.live_view import LiveView
    from daemon.http.metrics import DaemonMetrics
    from daemon.http.named_faces import NamedFaces
    from daemon.http.server import HttpServer

    settings = daemon.settings
    if not settings.http.listen:
        raise ValueError("http.listen is not set: nothing to serve")
    if not daemon.specs:
        # facestream serve runs for days on uploads decoded in the server's worker threads: without the pinned
        # threshold eight concurrent 23 MP uploads left +1.1 GB RSS in per-thread arenas, pinned +0.65 GB.
        pin_mmap_threshold()
    view = LiveView([s.id for s in daemon.specs])
    hub = EventHub(settings.http.recent_events)
    metrics = DaemonMetrics(daemon.snapshot, lambda sid: view.status(sid)["state"] == "opened",
                            lambda: daemon.started_monotonic)
    metrics.drift, metrics.identity_labels = drift, settings.http.identity_labels
    # Ahead of the other sinks: the page learns a source's state even if a later sink is slow.
    for sink in (hub, metrics, view):
        daemon.add_sink(sink, first=True)
    daemon.add_observer(view)
    daemon.add_observer(metrics)
    gate = daemon.face_gate
    named = NamedFaces(lambda e: gate.reject(e) is None, max(1024, settings.http.recent_events))
    daemon.add_annotator(named)  # so POST /v1/events/{seq}/reject finds the face an event named
    daemon.add_observer(named)
    faces = FaceService(DaemonLink(settings, daemon.embedder, daemon.gallery_path, daemon.gallery_state,
                                   lambda: daemon.face_gate, daemon.reload_gallery, daemon.publish))
    ctx = HttpContext(settings.http, faces, hub, view, metrics, lambda paths: status(daemon, view, hub, paths),
                      unknowns.store if unknowns is not None else None, named, drift,
                      attendance.roster_report if attendance is not None else None)
    audit_path = settings.http.audit_log or _default_audit(daemon)
    audit = (ApiAudit(audit_path, settings.paths.state_dir / "spool",
                      rotate_daily=settings.retention.audit_days is not None) if audit_path is not None else None)
    app = make_app(ctx, audit)
    metrics.guard = app
    on_stop = [audit.close] if audit else []
    if unknowns is not None:  # observers close before the server stops: the API may still read the visitors
        unknowns.owns_store = False
        on_stop.append(unknowns.store.close)
    daemon.add_server(HttpServer(app, settings.http.listen, on_stop=on_stop))
    return daemon


def _default_audit(daemon: Daemon) -> Path | None:
    """Beside a gallery file; in the state directory for a gallery in a database (no file to sit beside)."""
    g = daemon.gallery_path
    if g is None:
        return None
    if isinstance(g, Path):
        return g.with_name(g.name + ".api-audit.jsonl")
    state = daemon.settings.paths.state_dir.expanduser()
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    return state / "api-audit.jsonl"


def status(daemon: Daemon, view: Any, hub: Any, paths: bool = False) -> dict[str, Any]:
    """``GET /v1/status``: every source's state and figures, the pipeline's queues and the gallery in use;
    server paths (the gallery file, video files) only with ``paths`` (a caller who sent the token)."""
    snap = daemon.snapshot()
    sources = []
    for src in snap.sources:
        uri = src.uri if paths or src.kind != "file" else Path(src.uri).name
        sources.append({**view.status(src.id), "uri": uri, "kind": src.kind, "live": src.live,
                        "frames_read": src.frames_read, "frames_dropped": src.frames_dropped,
                        "frames_processed": src.frames_processed})
    g, gal = daemon.gallery_path, snap.gallery
    return {"uptime_s": snap.uptime_s, "model": snap.model_id, "engines": snap.engines,
            "gallery": {"path": (str(g) if paths else location_name(g)) if g else None, "version": gal.version,
                        "state": gal.state,
                        "identities": gal.identities, "threshold": round(gal.threshold, 4),
                        "margin": round(gal.margin, 4)},
            "sources": sources, "queues": snap.queues, "faces_embedded": snap.faces_embedded, "latency": snap.latency,
            "stage_errors": {k: v for k, v in snap.stage_errors.items() if v}, "events_sent": snap.events_sent,
            "sse_events_dropped": hub.dropped, **snap.sink_counters}
