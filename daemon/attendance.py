"""Attendance: each rostered person marked once per period (a day, or sessions of a day) across every
camera of a site, in a SQLite book that survives restarts; the report of who was present and who not.

A mark is taken from ``face.recognized`` events, so it inherits their threshold, margin and vote; the
first recognition in a period marks, later ones (another camera, a second appearance) do not. People
recognised but not on the roster are kept as "unexpected" rather than dropped: an installer wants to
see a gallery that holds more people than the roster.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.csv_files import write_rows
from pipeline.private_files import check_output, open_private

_SESSION = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def read_roster(path: Path) -> list[str]:
    """Identities of a roster CSV: a column ``identity`` (or the first column), one person a row."""
    if not path.is_file():
        raise ValueError(f"roster file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"roster file {path} is empty")
    col = [c.strip().lower() for c in rows[0]].index("identity") if "identity" in [c.strip().lower()
                                                                               for c in rows[0]] else None
    body = rows[1:] if col is not None else rows
    names = [r[col or 0].strip() for r in body if len(r) > (col or 0) and r[col or 0].strip()]
    if not names:
        raise ValueError(f"roster file {path} names nobody")
    return list(dict.fromkeys(names))


def parse_sessions(sessions: list[str]) -> list[tuple[int, int, str]]:
    """'HH:MM-HH:MM' strings as (start minute, end minute, label); a ValueError names a bad one."""
    out = []
    for s in sessions:
        m = _SESSION.match(s.strip())
        if m is None:
            raise ValueError(f"attendance session {s!r} must look like 08:00-12:00")
        a, b = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
        if b <= a:
            raise ValueError(f"attendance session {s!r} ends before it starts")
        out.append((a, b, s.strip()))
    return out


def period_of(epoch: float, sessions: list[tuple[int, int, str]]) -> str | None:
    """The period a moment (local time) belongs to: its date, or date plus session; None between sessions."""
    t = dt.datetime.fromtimestamp(epoch)
    day = t.date().isoformat()
    if not sessions:
        return day
    minute = t.hour * 60 + t.minute
    return next((f"{day} {label}" for a, b, label in sessions if a <= minute < b), None)


APP_ID = 0x46535441  # "FSTA": marks the file as a facestream attendance book
SCHEMA_VERSION = 1


def check_book(path: Path, must_exist: bool = False) -> None:
    """Refuse, without writing a byte, a file that is not an attendance book: a gallery, another application's
    database, a file that is not SQLite. A missing or empty file is a new book (unless ``must_exist``)."""
    from pipeline.gallery.sqlite import APP_ID as GALLERY_APP_ID
    from pipeline.gallery.sqlite import SQLITE_MAGIC

    if path.is_dir():
        raise ValueError(f"attendance book {path} is a folder, not a file")
    if not path.exists() or path.stat().st_size == 0:
        if must_exist:
            raise ValueError(f"attendance book {path} does not exist")
        return
    with path.open("rb") as f:
        if f.read(16) != SQLITE_MAGIC:
            raise ValueError(f"{path} is not an attendance book (not an SQLite database)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path} is not an attendance book (damaged SQLite file: {exc})") from None
    if app == GALLERY_APP_ID:
        raise ValueError(f"{path} is a facestream gallery, not an attendance book")
    if app not in (0, APP_ID) or (app == 0 and not tables <= {"marks"}):
        raise ValueError(f"{path} is not an attendance book (an SQLite database of another application)")


class AttendanceBook:
    """The marks of one site: at most one per identity and period. ``readonly`` (reports) never writes: not a
    table, not a mode bit."""

    def __init__(self, path: Path, site: str = "site", readonly: bool = False) -> None:
        check_book(path, must_exist=readonly)
        self.path, self.site = path, site
        self._lock = threading.Lock()
        if readonly:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            if not {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}:
                self._db.close()
                raise ValueError(f"attendance book {path} holds no marks table (nobody was ever marked)")
            return
        check_output(path, "attendance.db")
        open_private(path, "a").close()  # 0600: the book names people (appending nothing changes no byte)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        try:
            self._db.executescript(
                "BEGIN; CREATE TABLE IF NOT EXISTS marks (site TEXT, period TEXT, identity TEXT, first_seen REAL, "
                "source TEXT, score REAL, PRIMARY KEY (site, period, identity)); "
                f"PRAGMA application_id = {APP_ID}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"attendance book {path} is not an attendance book: {exc}") from None

    def mark(self, identity: str, epoch: float, period: str, source: str, score: float) -> bool:
        """True when this is the identity's first mark in ``period`` (it is stored); False when it had one."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO marks VALUES (?, ?, ?, ?, ?, ?)",
                                   (self.site, period, identity, epoch, source, score))
            self._db.commit()
            return cur.rowcount == 1

    def marks(self, day: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT period, identity, first_seen, source, score FROM marks WHERE site = ? AND "
                                "(period = ? OR period LIKE ?) ORDER BY first_seen", (self.site, day, f"{day} %"))
        return [{"period": p, "identity": i, "first_seen": dt.datetime.fromtimestamp(t).isoformat(timespec="seconds"),
                 "source": s, "score": sc} for p, i, t, s, sc in rows]

    def close(self) -> None:
        self._db.close()


def report(book: AttendanceBook, roster: list[str], day: str) -> dict[str, Any]:
    marks = book.marks(day)
    seen = {m["identity"] for m in marks}
    return {"site": book.site, "date": day, "present": [m for m in marks if m["identity"] in roster],
            "absent": [r for r in roster if r not in seen],
            "unexpected": [m for m in marks if m["identity"] not in roster]}


def write_report_csv(rep: dict[str, Any], path: Path) -> None:
    rows = [[rep["date"], m["identity"], status, m["period"], m["first_seen"], m["source"], m["score"]]
            for status in ("present", "unexpected") for m in rep[status]]
    rows += [[rep["date"], name, "absent", "", "", "", ""] for name in rep["absent"]]
    write_rows(path, ["date", "identity", "status", "period", "first_seen", "source", "score"], rows)


class AttendanceSink:
    """A sink: ``face.recognized`` in, ``attendance.marked`` out (through ``publish``) on a first mark."""

    def __init__(self, book: AttendanceBook, roster: list[str], sessions: list[tuple[int, int, str]],
                 publish: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.book, self.roster, self.sessions = book, set(roster), sessions
        self.publish = publish

    def send(self, topic: str, body: dict[str, Any]) -> None:
        if topic != "face.recognized" or not body.get("identity"):
            return
        period = period_of(float(body["epoch"]), self.sessions)
        if period is None:
            return
        if self.book.mark(body["identity"], float(body["epoch"]), period, body["source"], float(body["score"])) \
                and self.publish is not None:
            self.publish("attendance.marked", {"site": self.book.site, "period": period, "identity": body["identity"],
                                               "source": body["source"], "score": body["score"],
                                               "on_roster": body["identity"] in self.roster})

    def close(self) -> None:
        self.book.close()

