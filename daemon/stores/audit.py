"""Audit logs: one record per decision (the door's grants and denials, the API's gallery changes), kept as
evidence. The embedded backend is a JSON-lines file (0600, each line flushed as written, fsynced on close);
a site's hosts share one in PostgreSQL (``postgres.py``). ``open_audit`` picks the backend from the location."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from daemon.sinks.rotation import file_day, rotate
from pipeline.private_files import check_output, open_private


class AuditStore(Protocol):
    lines: int  # records written since opening

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlAudit:
    """``rotate_daily`` (with retention): each local day in its own file, ``audit.2026-12-02.jsonl``."""

    def __init__(self, path: Path, what: str = "audit log", rotate_daily: bool = False) -> None:
        self.path = check_output(path, what)
        self.rotate_daily = rotate_daily
        self._lock = threading.Lock()
        self._file = self._open()
        self._day = file_day(self._file.fileno())
        self.lines = 0

    def _open(self) -> Any:
        """Locked while open, so retention never rewrites it under us (a second writer is let be, as before)."""
        f = open_private(self.path, "a", encoding="utf-8")
        with contextlib.suppress(OSError):
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return f

    def _rotate_if_new_day(self) -> None:
        today = dt.date.today()
        if self.rotate_daily and today != self._day and os.fstat(self._file.fileno()).st_size:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            rotate(self.path, self._day)
            self._file = self._open()
        self._day = today

    def write(self, record: dict[str, Any]) -> None:
        text = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self._file.closed:
                return
            self._rotate_if_new_day()
            self._file.write(text)
            self._file.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()


def open_audit(location: str | Path, what: str = "audit log", spool_dir: Path | None = None, *,
               rotate_daily: bool = False) -> AuditStore:
    """The audit log at ``location``: a file path (JSON lines, one file a day with ``rotate_daily``), or a
    ``postgresql://`` URL (records spool under ``spool_dir`` while the database is down; retention deletes rows)."""
    from pipeline.pg import is_pg_url

    if is_pg_url(location):
        from daemon.stores.postgres import PgAudit

        return PgAudit(str(location), what, spool_dir)
    return JsonlAudit(Path(location).expanduser(), what, rotate_daily)


def check_audit(location: str | Path, what: str) -> None:
    """Refuse, without a write, an audit location that cannot be used (see ``check_output``; a database that
    is unreachable, another application's or newer)."""
    from pipeline.pg import is_pg_url

    if is_pg_url(location):
        from daemon.stores.postgres import check_pg_store

        check_pg_store(str(location), "audit", what)
    else:
        check_output(location, what)
