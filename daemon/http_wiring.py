"""Attaches the HTTP API to a built daemon: a live view and metrics (frame observers and sinks), an event hub
(a sink) and the server, bound at once so a port in use fails before the pipeline starts.

Only a daemon serving HTTP gets these parts, so the hot path of one that does not is unchanged. The
daemon starts the server with its stages and stops it after the sinks have closed, so event streams
receive the final events.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from daemon.memory import pin_mmap_threshold
from daemon.runner import Daemon


def attach_http(daemon: Daemon) -> Daemon:
    from daemon.api import make_app
    from daemon.api_audit import ApiAudit
    from daemon.event_hub import EventHub
    from daemon.http_server import HttpServer
    from daemon.live_view import LiveView
    from daemon.metrics import DaemonMetrics

    settings = daemon.settings
    if not settings.http.listen:
        raise ValueError("http.listen is not set: nothing to serve")
    if not daemon.specs:
        # facestream serve runs for days on uploads decoded in the server's worker threads: without the pinned
        # threshold eight concurrent 23 MP uploads left +1.1 GB RSS in per-thread arenas, pinned +0.65 GB.
        pin_mmap_threshold()
    daemon.live_view = LiveView([s.id for s in daemon.specs])
    daemon.event_hub = EventHub(settings.http.recent_events)
    daemon.metrics = DaemonMetrics(daemon)
    # Ahead of the other sinks: the page learns a source's state even if a later sink is slow.
    daemon.sinks[:0] = [daemon.live_view, daemon.metrics, daemon.event_hub]
    daemon.events.observers += [daemon.live_view, daemon.metrics]
    g = daemon.gallery_path
    audit_path = settings.http.audit_log or (g.with_name(g.name + ".api-audit.jsonl") if g is not None else None)
    audit = ApiAudit(audit_path) if audit_path is not None else None
    app = make_app(daemon, status, audit)
    daemon.metrics.guard = app
    daemon.http = HttpServer(app, settings.http.listen, on_stop=[audit.close] if audit else [])
    return daemon


def status(daemon: Daemon, paths: bool = False) -> dict[str, Any]:
    """``GET /v1/status``: every source's state and figures, the pipeline's queues and the gallery in use;
    server paths (the gallery file, video files) only with ``paths`` (a caller who sent the token)."""
    matcher, threshold, margin, version = daemon.match.state()
    sources = []
    for spec, src in zip(daemon.specs, daemon.sources, strict=True):
        row = daemon.live_view.status(spec.id)
        uri = spec.display_uri if paths or spec.kind != "file" else Path(spec.display_uri).name
        sources.append({**row, "uri": uri, "kind": spec.kind, "live": src.live,
                        "frames_read": src.frames_read, "frames_dropped": src.frames_dropped,
                        "frames_processed": daemon.events.frames_processed.get(spec.id, 0)})
    g = daemon.gallery_path
    return {"uptime_s": round(time.monotonic() - daemon.started_monotonic, 1), "model": daemon.embedder.model_id,
            "gallery": {"path": (str(g) if paths else g.name) if g else None, "version": version,
                        "identities": len(getattr(matcher, "names", ())), "threshold": round(threshold, 4),
                        "margin": round(margin, 4)},
            "sources": sources, "queues": {k: q.qsize() for k, q in daemon.queues().items()},
            "faces_embedded": daemon.embed.faces_embedded, "latency": daemon.events.latency(),
            "stage_errors": {st.name: st.errors for st in daemon.stages if st.errors},
            "events_sent": daemon.events.events_sent, "sse_events_dropped": daemon.event_hub.dropped}
