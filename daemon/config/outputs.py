"""Every file the daemon will write, checked before it writes any.

A daemon given a good event log and a bad attendance book must fail with one line *before* it has created,
appended to or tightened the event log: bad input loses nothing already written and changes no file.
"""

from __future__ import annotations

from pathlib import Path

from daemon.config import Settings
from pipeline.private_files import check_output


def check_outputs(settings: Settings) -> None:
    """One-line ValueError naming the first unusable output: a symlink, a folder, a missing folder, a file
    that is not what it should be (an attendance book that is a gallery)."""
    from daemon.config.profiles import parse_sessions, read_roster
    from daemon.stores.attendance import check_book
    from daemon.stores.audit import check_audit
    from pipeline.pg import is_pg_url

    s, a = settings.sinks, settings.attendance
    state = settings.paths.state_dir.expanduser()
    spool = settings.mqtt.spool if settings.mqtt.url else None
    stores = (settings.door.audit, a.db, settings.http.audit_log)
    outputs = [p for p in (s.jsonl, *stores, spool) if p and not is_pg_url(p)]
    if (any(state in Path(p).parents for p in outputs) or any(is_pg_url(p) for p in stores if p)) \
            and not state.is_dir():
        state.mkdir(mode=0o700, parents=True)  # the one folder made for the user (files, spools): it is ours
    for path, what in ((s.jsonl, "sinks.jsonl (--events-jsonl)"), (s.timeline_csv, "sinks.timeline_csv"),
                       (a.db, "attendance.db"), (spool, "mqtt.spool")):
        if path and not is_pg_url(path):
            check_output(path, what)
    for path, what in ((settings.door.audit, "door.audit"), (settings.http.audit_log, "http.audit_log")):
        if path:
            check_audit(path, what)
    if s.annotate_dir and not Path(s.annotate_dir).expanduser().is_dir():
        raise ValueError(f"sinks.annotate_dir: folder {s.annotate_dir} does not exist")
    if a.db:
        check_book(a.db if is_pg_url(a.db) else Path(a.db).expanduser())
        parse_sessions(a.sessions)
        if a.roster:
            read_roster(Path(a.roster))
