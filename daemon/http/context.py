"""What the HTTP routes are given: the settings, the photo service, the live parts the page reads and the
status function; never the daemon itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.config.http import HttpConfig
from daemon.http.event_hub import EventHub
from daemon.http.faces import FaceService
from daemon.http.live_view import LiveView
from daemon.http.metrics import DaemonMetrics


@dataclass(frozen=True)
class HttpContext:
    http: HttpConfig
    faces: FaceService
    hub: EventHub
    view: LiveView
    metrics: DaemonMetrics
    status: Callable[[bool], dict[str, Any]]  # GET /v1/status; the flag: the caller may see server paths
    unknowns: Any = None  # the unknown visitors' store (daemon/stores/unknowns.py), None when not kept
    named: Any = None  # the faces of recent face.recognized events (daemon/http/named_faces.py)
    drift: Any = None  # the drift watch (daemon/profiles/drift.py), None without a gallery or when disabled
    attendance: Callable[[str], dict[str, Any]] | None = None  # a day's report, when attendance is configured
