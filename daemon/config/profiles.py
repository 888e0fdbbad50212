"""``[attendance]`` and ``[door]``: the settings of the two profiles that keep records."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.config.common import StoreLocation, existing_file
from daemon.sinks.keys import ZMQ_ADDRESS

_SESSION = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


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


class AttendanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db: StoreLocation | None = Field(None, description="Attendance book: a SQLite file (0600), or a postgresql:// "
                                     "URL (no password in it) that every host of the site shares; set it to mark "
                                     "attendance.")
    roster: Path | None = Field(None, description="CSV of the identities expected (an 'identity' column, or the "
                                "first column).")
    site: str = Field("site", min_length=1, description="Site name: marks are once per identity, period and site.")
    sessions: list[str] = Field(default_factory=list, description="Periods within a day, as 'HH:MM-HH:MM' local "
                                "time (empty: the whole day is one period); recognitions between them mark nothing.")

    @field_validator("roster")
    @classmethod
    def _roster_exists(cls, v: Path | None) -> Path | None:
        return existing_file(v, "roster file {} does not exist")

    @field_validator("sessions")
    @classmethod
    def _sessions(cls, v: list[str]) -> list[str]:
        parse_sessions(v)
        return v


class DoorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audit: StoreLocation | None = Field(None, description="Door audit: a JSON-lines file (0600), or a "
                                        "postgresql:// URL (no password in it) a site's hosts share; set it to take "
                                        "door decisions (access.granted / access.denied), each audited with why.")
    votes_k: int = Field(3, ge=1, description="Faces of the last votes_n, each named the same person on its own, "
                         "needed for a grant.")
    votes_n: int = Field(5, ge=1, description="How many of a track's latest judged faces vote.")
    cooldown_s: float = Field(10.0, ge=0, description="Seconds before the same person is granted again.")
    command: list[str] = Field(default_factory=list, description="Run on a grant: an argv list (no shell); the "
                               "grant event is written to its stdin as JSON.")
    zmq_req: str | None = Field(None, description="Or send the grant as a ZeroMQ REQ to this address and await "
                                "the reply.")
    action_timeout_s: float = Field(5.0, gt=0, description="Seconds the command or the reply may take.")

    @model_validator(mode="after")
    def _consistent(self) -> DoorConfig:
        if self.votes_k > self.votes_n:
            raise ValueError(f"door.votes_k ({self.votes_k}) must not exceed door.votes_n ({self.votes_n})")
        if self.command and self.zmq_req:
            raise ValueError("door.command and door.zmq_req: set one action, not both")
        if self.zmq_req and not ZMQ_ADDRESS.match(self.zmq_req):
            raise ValueError(f"door.zmq_req must look like tcp://HOST:PORT, got {self.zmq_req!r}")
        return self
