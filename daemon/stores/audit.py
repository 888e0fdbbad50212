"""Audit logs: one record per decision (the door's grants and denials, the API's gallery changes), kept as
evidence. The embedded backend is a JSON-lines file (0600, each line flushed as written, fsynced on close);
a site's hosts share one in PostgreSQL (``postgres.py``). ``open_audit`` picks the backend from the location."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from pipeline.private_files import check_output, open_private


class AuditStore(Protocol):
    lines: int  # records written since opening

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlAudit:
    def __init__(self, path: Path, what: str = "audit log") -> None:
        self.path = check_output(path, what)
        self._lock = threading.Lock()
        self._file = open_private(self.path, "a", encoding="utf-8")
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        text = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self._file.closed:
                return
            self._file.write(text)
            self._file.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()


def open_audit(location: str | Path, what: str = "audit log", spool_dir: Path | None = None) -> AuditStore:
    """The audit log at ``location``: a file path (JSON lines), or a ``postgresql://`` URL (records spool under
    ``spool_dir`` while the database is down)."""
    from pipeline.pg import is_pg_url

    if is_pg_url(location):
        from daemon.stores.postgres import PgAudit

        return PgAudit(str(location), what, spool_dir)
    return JsonlAudit(Path(location).expanduser(), what)


def check_audit(location: str | Path, what: str) -> None:
    """Refuse, without a write, an audit location that cannot be used (see ``check_output``; a database that
    is unreachable, another application's or newer)."""
    from pipeline.pg import is_pg_url

    if is_pg_url(location):
        from daemon.stores.postgres import check_pg_store

        check_pg_store(str(location), "audit", what)
    else:
        check_output(location, what)
