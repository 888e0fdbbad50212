"""Retention: what is older than ``[retention]`` allows goes — day files of the event log and the audits, old
lines inside a log no daemon holds, attendance marks (overwritten, then the book vacuumed) and analysis folders.
Nothing younger is touched. ``dry_run`` lists the same removals and changes nothing.

A log that a running daemon holds (its lock) is never rewritten under it: its old lines leave with the daily
rotation, day file by day file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.sinks.rotation import dated_files

log = structlog.get_logger(__name__)
DAY = 86400.0


@dataclass(frozen=True)
class Removal:
    what: str  # events, audit, attendance, analyses
    path: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _line_epoch(raw: bytes) -> float | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    for key in ("epoch", "time"):
        v = body.get(key)
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str):
            with contextlib.suppress(ValueError):
                return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    return None


@contextlib.contextmanager
def _unheld(path: Path) -> Iterator[int | None]:
    """The file's fd with an exclusive lock, or None when a running daemon holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _prune_lines(path: Path, what: str, before: float, dry_run: bool) -> list[Removal]:
    """Lines older than ``before`` out of a log no daemon holds: the young ones are written to a new private
    file that replaces it, so the old lines are in no file afterwards."""
    if not path.is_file() or path.is_symlink():
        return []
    with _unheld(path) as fd:
        if fd is None:
            return []
        with open(path, "rb") as f:
            lines = f.readlines()
        keep = [raw for raw in lines if (t := _line_epoch(raw)) is None or t >= before]
        gone = len(lines) - len(keep)
        if not gone:
            return []
        if not dry_run:
            tmp_fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
            try:
                with os.fdopen(tmp_fd, "wb") as f:
                    f.writelines(keep)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return [Removal(what, str(path), f"{gone} line(s) older than {_day(before)}")]


def _day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).isoformat(timespec="seconds")


def _expire_log(path: Path | None, what: str, days: float | None, now: float, dry_run: bool) -> list[Removal]:
    if path is None or days is None:
        return []
    path = Path(path).expanduser()
    before = now - days * DAY
    out = []
    for day, p in dated_files(path):
        end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time()).timestamp()
        if end_of_day <= before:  # its newest line is older than the limit
            out.append(Removal(what, str(p), f"day file {day.isoformat()}"))
            if not dry_run:
                p.unlink()
        else:  # the day that straddles the limit: its old lines only
            out += _prune_lines(p, what, before, dry_run)
    return out + _prune_lines(path, what, before, dry_run)


def _expire_analyses(root: Path | None, days: float | None, now: float, dry_run: bool) -> list[Removal]:
    if root is None or days is None or not Path(root).expanduser().is_dir():
        return []
    before, out = now - days * DAY, []
    for sub in sorted(Path(root).expanduser().iterdir()):
        if sub.is_symlink() or not sub.is_dir() or not ((sub / "events.jsonl").exists()
                                                        or (sub / "report.html").exists()):
            continue  # only folders that are analyses
        newest = max((p.lstat().st_mtime for p in sub.rglob("*")), default=sub.lstat().st_mtime)
        if newest < before:
            out.append(Removal("analyses", str(sub), f"analysis last written {_day(newest)}"))
            if not dry_run:
                shutil.rmtree(sub)
    return out


def _pg_book(url: str) -> bool:
    from daemon.stores.postgres import pg_store_exists

    return pg_store_exists(url, "attendance", "attendance.db")


def _expire_pg_audit(url: str, what: str, days: float | None, now: float, dry_run: bool) -> list[Removal]:
    if days is None:
        return []
    from daemon.stores.postgres import PgAudit, pg_store_exists

    if not pg_store_exists(url, "audit", what):
        return []
    store = PgAudit(url, what, readonly=True)
    try:
        n = store.expire(now - days * DAY, dry_run)
    finally:
        store.close()
    return [Removal("audit", f"{url} ({what})", f"{n} record(s) older than {_day(now - days * DAY)}")] if n else []


def enforce(settings: Any, now: float | None = None, dry_run: bool = False) -> list[Removal]:
    """Every removal ``settings.retention`` asks for now (done unless ``dry_run``)."""
    from daemon.stores.attendance import open_book

    r, now = settings.retention, time.time() if now is None else now
    from pipeline.pg import is_pg_url

    out = _expire_log(settings.sinks.jsonl, "events", r.events_days, now, dry_run)
    for path, what in ((settings.door.audit, "door.audit"), (settings.http.audit_log, "http.audit_log")):
        if path and is_pg_url(path):
            out += _expire_pg_audit(str(path), what, r.audit_days, now, dry_run)
        else:
            out += _expire_log(path, "audit", r.audit_days, now, dry_run)
    db = settings.attendance.db
    if r.attendance_days is not None and db is not None and (_pg_book(db) if is_pg_url(db)
                                                             else Path(db).expanduser().is_file()):
        pg = is_pg_url(db)  # a PostgreSQL store opened read-only has no spool; its pool still deletes
        book = open_book(db if pg else Path(db).expanduser(), settings.attendance.site, readonly=pg or dry_run)
        try:
            n = book.expire(now - r.attendance_days * DAY, dry_run)
        finally:
            book.close()
        if n:
            out.append(Removal("attendance", str(db), f"{n} mark(s) older than {_day(now - r.attendance_days * DAY)}"))
    out += _expire_analyses(r.analyses_dir, r.analyses_days, now, dry_run)
    return out


class RetentionKeeper:
    """Runs ``enforce`` every ``retention.interval_s`` while the daemon runs (a failure is logged, never fatal)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.retention.interval_s):
            try:
                removed = enforce(self.settings)
            except Exception as exc:
                log.error("retention_failed", error=str(exc))
                continue
            for rm in removed:
                log.info("retention_removed", **rm.as_dict())

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join(5.0)
        return not self._thread.is_alive()
