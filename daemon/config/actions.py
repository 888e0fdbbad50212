"""``[[actions]]``: what to run when an event happens (a command, a webhook POST or a ZeroMQ request), with
filters on topic, source, identity, score and time of day, rate-limited per action."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.sinks.keys import ZMQ_ADDRESS

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_window(text: str) -> tuple[int, int]:
    """'HH:MM-HH:MM' as (start minute, end minute); a window may run past midnight ('22:00-06:00')."""
    m = _WINDOW.match(text.strip())
    if m is None:
        raise ValueError(f"action time window {text!r} must look like 22:00-06:00")
    a, b = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if a == b:
        raise ValueError(f"action time window {text!r} is empty (it starts when it ends)")
    return a, b


def in_window(minute: int, window: tuple[int, int]) -> bool:
    a, b = window
    return a <= minute < b if a < b else (minute >= a or minute < b)


class ActionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="Name in logs and counters (default: action-<index>).")
    on: list[str] = Field(..., min_length=1, description="Event topics that trigger it, e.g. ['face.unknown'] or "
                          "['face.recognized', 'access.granted'].")
    sources: list[str] = Field(default_factory=list, description="Only events of these sources (empty: any).")
    identities: list[str] = Field(default_factory=list, description="Only events naming one of these people "
                                  "(a watch list; empty: any, unknown faces included).")
    visitors: list[str] = Field(default_factory=list, description="Only face.unknown events of these unknown "
                                "visitors (their ids, /v1/unknowns; empty: any).")
    min_appearances: int | None = Field(None, ge=1, description="Only face.unknown events of a visitor seen at "
                                        "least this many times, this one included (2: a stranger who came back).")
    min_score: float | None = Field(None, ge=-1, le=1, description="Only events whose score is at least this.")
    times: list[str] = Field(default_factory=list, description="Only within these local time windows, as "
                             "'HH:MM-HH:MM' (may run past midnight: '22:00-06:00'; empty: always).")
    command: list[str] = Field(default_factory=list, description="Run this argv (no shell); the event JSON is "
                               "written to its stdin.")
    webhook: str | None = Field(None, description="Or POST the event JSON to this http(s):// URL.")
    zmq_req: str | None = Field(None, description="Or send the event as a ZeroMQ REQ and await the reply.")
    timeout_s: float = Field(5.0, gt=0, description="Seconds a run may take; a command still running then is "
                             "killed.")
    retries: int = Field(2, ge=0, le=10, description="Webhook: further attempts after a failure (connection "
                         "error, 429 or 5xx).")
    backoff_s: float = Field(0.5, ge=0, description="Webhook: first wait between attempts, doubled each time.")
    min_interval_s: float = Field(0.0, ge=0, description="At most one run per this many seconds; events in "
                                  "between are counted as rate-limited, not run.")
    queue: int = Field(16, ge=1, description="Runs waiting for this action's worker; beyond it events are "
                       "dropped (counted), never waited for.")

    @field_validator("times")
    @classmethod
    def _times(cls, v: list[str]) -> list[str]:
        for w in v:
            parse_window(w)
        return v

    @field_validator("webhook")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"action webhook must be an http:// or https:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> ActionConfig:
        if sum(map(bool, (self.command, self.webhook, self.zmq_req))) != 1:
            raise ValueError("each action needs exactly one of command, webhook or zmq_req")
        if self.zmq_req and not ZMQ_ADDRESS.match(self.zmq_req):
            raise ValueError(f"action zmq_req must look like tcp://HOST:PORT, got {self.zmq_req!r}")
        return self
