"""Every file the daemon will write, checked before it writes any, and the gallery it shares.

A daemon given a good event log and a bad attendance book must fail with one line *before* it has created,
appended to or tightened the event log: bad input loses nothing already written and changes no file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import structlog

from daemon.config import Settings
from pipeline.private_files import check_output

log = structlog.get_logger(__name__)


def check_outputs(settings: Settings) -> None:
    """One-line ValueError naming the first unusable output: a symlink, a folder, a missing folder, a file
    that is not what it should be (an attendance book that is a gallery)."""
    from daemon.attendance import check_book, parse_sessions, read_roster

    s, a = settings.sinks, settings.attendance
    for path, what in ((s.jsonl, "sinks.jsonl (--events-jsonl)"), (s.timeline_csv, "sinks.timeline_csv"),
                       (settings.door.audit, "door.audit"), (settings.http.audit_log, "http.audit_log"),
                       (a.db, "attendance.db")):
        if path:
            check_output(path, what)
    if s.annotate_dir and not Path(s.annotate_dir).expanduser().is_dir():
        raise ValueError(f"sinks.annotate_dir: folder {s.annotate_dir} does not exist")
    if a.db:
        check_book(Path(a.db).expanduser())
        parse_sessions(a.sessions)
        if a.roster:
            read_roster(Path(a.roster))


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
