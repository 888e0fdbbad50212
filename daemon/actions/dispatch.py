"""The ``[[actions]]`` list as an event sink: each event is matched against every action's filters in the events
thread (cheap), and a matching one is handed to that action's own worker thread through a bounded queue, so a
hanging webhook or command never slows the cameras. Runs are rate-limited per action and each is logged with
its result."""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from daemon.actions.runner import ActionTarget, run_target
from daemon.config.actions import ActionConfig, in_window, parse_window

log = structlog.get_logger(__name__)


class _Action:
    def __init__(self, cfg: ActionConfig, name: str) -> None:
        self.cfg, self.name = cfg, name
        self.on = frozenset(cfg.on)
        self.windows = [parse_window(w) for w in cfg.times]
        self.target = ActionTarget(tuple(cfg.command), cfg.webhook, cfg.zmq_req, cfg.timeout_s, cfg.retries,
                                   cfg.backoff_s)
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(cfg.queue)
        self.last_run: float | None = None
        self.counts: Counter[str] = Counter()
        self.deadline: float | None = None  # set at stop: runs not started by then are dropped
        self.thread = threading.Thread(target=self._work, name=f"action-{name}", daemon=True)

    def wants(self, topic: str, body: dict[str, Any], now: dt.datetime) -> bool:
        c = self.cfg
        if topic not in self.on:
            return False
        if c.sources and body.get("source") not in c.sources:
            return False
        if c.identities and body.get("identity") not in c.identities:
            return False
        if c.visitors and body.get("visitor") not in c.visitors:
            return False
        if c.min_appearances is not None and int(body.get("visitor_appearances") or 0) < c.min_appearances:
            return False
        score = body.get("score")
        if c.min_score is not None and (not isinstance(score, int | float) or score < c.min_score):
            return False
        return not self.windows or any(in_window(now.hour * 60 + now.minute, w) for w in self.windows)

    def offer(self, body: dict[str, Any], mono: float) -> None:
        if self.last_run is not None and mono - self.last_run < self.cfg.min_interval_s:
            self.counts["rate_limited"] += 1
            return
        try:
            self.queue.put_nowait(body)
        except queue.Full:
            self.counts["dropped"] += 1
            return
        self.last_run = mono

    def one_run_s(self) -> float:
        """The longest one run can take: every attempt at its timeout, plus the waits between them."""
        c = self.cfg
        return c.timeout_s * (c.retries + 1 if c.webhook else 1) + c.backoff_s * (2 ** c.retries if c.webhook else 0)

    def _work(self) -> None:
        while (event := self.queue.get()) is not None:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.counts["dropped"] += 1  # the daemon is stopping and this one would outlive the wait
                continue
            result = run_target(self.target, event)
            self.counts["ok" if result.get("ok") else "failed"] += 1
            if result.get("timed_out"):
                self.counts["timed_out"] += 1
            (log.info if result.get("ok") else log.warning)(
                "action_ran", action=self.name, topic=event.get("topic"), source=event.get("source"),
                identity=event.get("identity"), result=result)


class ActionSink:
    """Events in, actions run. ``clock`` gives local wall time (tests pass one for the time windows)."""

    def __init__(self, actions: list[ActionConfig], clock: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.actions = [_Action(a, a.name or f"action-{i}") for i, a in enumerate(actions)]
        names = [a.name for a in self.actions]
        if len(set(names)) != len(names):
            raise ValueError(f"actions: two actions share the name {Counter(names).most_common(1)[0][0]!r}")
        self.clock = clock
        for a in self.actions:
            a.thread.start()

    def send(self, topic: str, body: dict[str, Any]) -> None:
        now, mono = self.clock(), time.monotonic()
        for a in self.actions:
            if a.wants(topic, body, now):
                a.offer(body, mono)

    def counters(self) -> dict[str, Any]:
        return {"actions": {a.name: dict(a.counts) for a in self.actions}}

    def close(self) -> None:
        """Let the running run finish and queued ones start for as long as one run may take; what has not
        started by then is dropped and counted, so a hanging action delays the stop by one run, not a queue."""
        for a in self.actions:
            a.deadline = time.monotonic() + a.one_run_s()
            a.queue.put(None)
        for a in self.actions:
            a.thread.join(2 * a.one_run_s() + 1)
            if a.counts["dropped"]:
                log.warning("actions_dropped_at_stop", action=a.name, dropped=a.counts["dropped"])
