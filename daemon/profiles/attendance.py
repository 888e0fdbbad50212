"""Attendance: each rostered person marked once per period (a day, or sessions of a day) across every
camera of a site, in a SQLite book that survives restarts; the report of who was present and who not.

A mark is taken from ``face.recognized`` events, so it inherits their threshold, margin and vote; the
first recognition in a period marks, later ones (another camera, a second appearance) do not. People
recognised but not on the roster are kept as "unexpected" rather than dropped: an installer wants to
see a gallery that holds more people than the roster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.stores.attendance import AttendanceStore
from pipeline.csv_files import write_rows


def period_of(epoch: float, sessions: list[tuple[int, int, str]]) -> str | None:
    """The period a moment (local time) belongs to: its date, or date plus session; None between sessions."""
    t = dt.datetime.fromtimestamp(epoch)
    day = t.date().isoformat()
    if not sessions:
        return day
    minute = t.hour * 60 + t.minute
    return next((f"{day} {label}" for a, b, label in sessions if a <= minute < b), None)


def report(book: AttendanceStore, roster: list[str], day: str) -> dict[str, Any]:
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

    def __init__(self, book: AttendanceStore, roster: list[str], sessions: list[tuple[int, int, str]],
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

    def roster_report(self, day: str) -> dict[str, Any]:
        """The day's report (present, absent, unexpected) of this daemon's book and roster (the page's panel)."""
        return {**report(self.book, sorted(self.roster), day), "roster": len(self.roster),
                "sessions": [label for _, _, label in self.sessions]}

    def close(self) -> None:
        self.book.close()

