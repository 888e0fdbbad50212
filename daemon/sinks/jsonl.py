"""The event log: one JSON line per event, flushed as written, 0600, one daemon at a time."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self, TextIO

import structlog

from daemon.sinks import check_event, dumps
from daemon.sinks.rotation import file_day, rotate
from pipeline.private_files import check_output, open_fd

log = structlog.get_logger(__name__)


class JsonlSink:
    """Appends one JSON line per event (the body, with ``topic`` first when the body lacks it), flushed as
    it is written, so the file can be tailed and parsed line by line while the daemon runs.

    The file is mode 0600 (an existing looser one is tightened): events name people. ``close`` fsyncs.
    A torn last line left by a killed daemon is dropped before appending, so the log stays one JSON
    object per line. A symlink is refused, and one daemon at a time holds the file (an advisory lock):
    two daemons appending to one log interleave their events.
    """

    def __init__(self, path: str | os.PathLike[str], rotate_daily: bool = False) -> None:
        p = check_output(path, "event log")
        self.path = p
        self.rotate_daily = rotate_daily
        self._lock = threading.Lock()
        self._file: TextIO | None = self._open()
        self._day = file_day(self._file.fileno()) if self._regular else dt.date.today()

    def _open(self) -> TextIO:
        fd = open_fd(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
            if self._regular:  # a FIFO or device is written to as it is
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ValueError(f"event log {self.path} is in use by another facestream daemon: give each "
                                     "daemon its own file") from None
                _end_with_complete_line(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "a", encoding="utf-8")

    def _rotate_if_new_day(self) -> None:
        """With retention, each local day gets its own file (``events.2026-12-02.jsonl``), so old days can be
        deleted whole while this one is written."""
        today = dt.date.today()
        if not (self.rotate_daily and self._regular and today != self._day and self._file is not None):
            self._day = today
            return
        if os.fstat(self._file.fileno()).st_size:
            self._file.flush()
            os.fsync(self._file.fileno())
            rotate(self.path, self._day)  # still locked by our fd: nobody else appends meanwhile
            self._file.close()
            self._file = self._open()
        self._day = today

    def send(self, topic: str, body: dict[str, Any]) -> None:
        check_event(topic, body)
        line = dumps(body if body.get("topic") == topic else {"topic": topic, **body})
        with self._lock:
            if self._file is None:
                raise RuntimeError(f"event log {self.path} is closed")
            self._rotate_if_new_day()
            self._file.write(line + "\n")
            self._file.flush()

    def abort(self) -> None:
        """A second signal: fsync what is written and return, never waiting long on the writer's lock."""
        if self._lock.acquire(timeout=0.5):
            try:
                if self._file is not None and self._regular:
                    os.fsync(self._file.fileno())
            finally:
                self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                if self._regular:  # a device or FIFO cannot be fsynced
                    os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end_with_complete_line(fd: int, path: Path) -> None:
    """Before appending: a last line without its newline is the tail of a write cut short (SIGKILL, power
    loss). Appending after it would glue two events into one corrupt line in the middle of the log."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start, chunk = size, 1 << 16
    while start > 0:  # find where the last line starts
        lo = max(0, start - chunk)
        nl = os.pread(fd, start - lo, lo).rfind(b"\n")
        if nl >= 0:
            start = lo + nl + 1
            break
        start = lo
    tail = os.pread(fd, size - start, start)
    try:
        complete = isinstance(json.loads(tail), dict)
    except ValueError:
        complete = False
    if complete:  # a whole event that only lacks its newline
        os.write(fd, b"\n")
    else:
        os.ftruncate(fd, start)
        log.warning("event_log_torn_line_dropped", path=str(path), bytes=size - start)


def read_log(path: str | os.PathLike[str], topics: tuple[str, ...] | list[str] = ()) -> Iterator[
        tuple[str, dict[str, Any]]]:
    """(topic, body) of each event in a JSON-lines event log whose topic starts with one of ``topics``.

    A last line that is cut short (no newline, not JSON: the daemon was killed mid-write) is skipped with
    a warning; any other line that is not a JSON event is a ValueError naming its line number."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"event log {p} does not exist")
    with p.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                body = json.loads(raw)
                why = "" if isinstance(body, dict) and isinstance(body.get("topic"), str) and body["topic"] else (
                    "no topic" if isinstance(body, dict) else f"a JSON {type(body).__name__}, not an object")
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                why = str(exc)
            if why and not raw.endswith(b"\n"):
                log.warning("event_log_torn_last_line_skipped", path=str(p), line=number, bytes=len(raw))
                return
            if why:
                raise ValueError(f"{p}:{number}: not a JSON event ({why})")
            if not topics or body["topic"].startswith(tuple(topics)):
                yield body["topic"], body
