"""The three ways our users run the daemon, each wired onto a built daemon by ``attach``: door access
(``door``: votes, grant action, audit), attendance (``attendance``: marks once per period, the day's
report) and video analysis (``analyze`` and its file ``outputs``: timeline, annotated videos, report; ``analyze_jobs``,
``analyze_ray`` and ``analyze_driver``: one job per video on a process pool or Ray, merged).
``unknowns`` (the unknown visitors) is attached by ``facestream run`` itself, beside the gallery file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.config import Settings
from daemon.runner import Daemon

log = structlog.get_logger(__name__)


@dataclass
class Attached:
    """The profile parts a daemon was given (None: its settings did not ask for that one)."""

    timeline: Any = None
    annotator: Any = None
    door: Any = None
    attendance: Any = None
    actions: Any = None


def attach(daemon: Daemon, liveness: Any = None) -> Attached:
    """Give ``daemon`` the parts its settings ask for: the timeline CSV and annotated videos of file runs, the
    door (``door.audit``, judging liveness with ``liveness`` when given), the attendance book
    (``attendance.db``) and the ``[[actions]]``."""
    s = daemon.settings
    parts = Attached()
    if s.sinks.timeline_csv:
        from daemon.profiles.outputs import Timeline

        parts.timeline = Timeline(path=Path(s.sinks.timeline_csv))
        daemon.add_observer(parts.timeline)
    if s.sinks.annotate_dir:
        from daemon.profiles.outputs import Annotator

        parts.annotator = Annotator(Path(s.sinks.annotate_dir), {})
        daemon.add_observer(parts.annotator)
    if s.door.audit:
        from daemon.profiles.door import DoorController

        dc = s.door

        def operating_point() -> tuple[float, float]:
            state = daemon.gallery_state()
            return state.threshold, state.margin

        if liveness is not None:  # scores each frame's judged faces before its events: face.recognized carries it
            daemon.add_annotator(liveness)
        parts.door = DoorController(dc.audit, operating_point, dc.votes_k, dc.votes_n, dc.cooldown_s,
                                    list(dc.command) or None, dc.zmq_req, dc.action_timeout_s, daemon.publish,
                                    rotate_daily=s.retention.audit_days is not None, liveness=liveness,
                                    spool_dir=s.paths.state_dir / "spool")
        daemon.add_observer(parts.door)
    if s.attendance.db:
        from daemon.config.profiles import parse_sessions, read_roster
        from daemon.profiles.attendance import AttendanceSink
        from daemon.stores.attendance import open_book

        a = s.attendance
        roster = read_roster(a.roster) if a.roster else []
        # Last in the list: its attendance.marked follows the face.recognized it came from in every sink.
        book = open_book(a.db, a.site, spool_dir=s.paths.state_dir / "spool")
        parts.attendance = AttendanceSink(book, roster, parse_sessions(a.sessions), daemon.publish)
        daemon.add_sink(parts.attendance)
    if s.actions:  # last: it sees the door's and the attendance's events too
        from daemon.actions.dispatch import ActionSink

        parts.actions = ActionSink(list(s.actions))
        daemon.add_sink(parts.actions)
    return parts


def build_daemon(settings: Settings, gallery: Path | str | None,
                 source_options: dict[str, Any] | None = None) -> tuple[Daemon, Attached]:
    """A daemon with every profile part its settings ask for."""
    if settings.retention.any:  # at start, before any log is opened (and so held), then hourly
        from daemon.stores.retention import RetentionKeeper, enforce

        for rm in enforce(settings):
            log.info("retention_removed", **rm.as_dict())
    liveness = None
    if settings.door.audit and settings.liveness.active(door=True):
        from daemon.profiles.door_liveness import make_liveness

        liveness = make_liveness(settings)  # bad weights fail here, before any file is opened
    daemon = Daemon(settings, gallery, source_options)
    if settings.retention.any:
        daemon.add_task(RetentionKeeper(settings))
    return daemon, attach(daemon, liveness)
