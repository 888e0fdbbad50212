"""Door access: a decision per track, an action on a grant, and an audit line for every decision.

A track is granted only when k of its last n judged faces were each, on their own, named the same
person (threshold and top-1 - top-2 margin), and the track's quality-weighted aggregate names that
person too: one lucky frame, or a face between two enrolled people, never opens the door. A
confirmed unknown is denied. The same person is not granted twice within the cooldown (the door is
already open). On a grant the configured action runs in a worker thread, so a slow door controller
never stalls the cameras: a command (an argv list from the settings, never a shell string; the event
is written to its stdin as JSON) with a timeout, or a ZeroMQ REQ message awaiting the reply, run by the same
runner as every ``[[actions]]`` entry (``daemon/actions/runner.py``). The
audit JSONL (0600) says why for every decision: top-1 and top-2 with scores, margin, votes, threshold.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from daemon.actions.runner import ActionTarget, run_target
from daemon.stores.audit import open_audit
from pipeline.types import MatchedFrame, TrackDecision

log = structlog.get_logger(__name__)


class DoorController:
    """An events-stage observer: reads each frame's decisions, publishes ``access.granted`` / ``access.denied``."""

    def __init__(self, audit_path: Path | str, threshold: Callable[[], tuple[float, float]], votes_k: int = 3,
                 votes_n: int = 5, cooldown_s: float = 10.0, command: list[str] | None = None,
                 zmq_req: str | None = None, action_timeout_s: float = 5.0,
                 publish: Callable[[str, dict[str, Any]], None] | None = None, rotate_daily: bool = False,
                 liveness: Any = None, spool_dir: Path | None = None) -> None:
        if not 1 <= votes_k <= votes_n:
            raise ValueError(f"door votes need 1 <= k <= n, got k={votes_k} n={votes_n}")
        self.k, self.n, self.cooldown_s = votes_k, votes_n, cooldown_s
        self.command, self.zmq_req, self.action_timeout_s = command, zmq_req, action_timeout_s
        self.threshold = threshold
        self.publish = publish
        self.liveness = liveness  # TrackLiveness, or None: a grant then needs no live face
        self._audit = open_audit(audit_path, "door.audit", spool_dir, rotate_daily=rotate_daily)
        self._votes: dict[tuple[str, int], deque[str | None]] = {}
        self._done: set[tuple[str, int]] = set()  # tracks granted or denied
        self._last_grant: dict[str, float] = {}
        self._workers: list[threading.Thread] = []

    def _write(self, line: dict[str, Any]) -> None:
        self._audit.write(line)

    def _why(self, src: str, d: TrackDecision, votes: list[str | None]) -> dict[str, Any]:
        thr, margin = self.threshold()
        c = list(d.candidates) + [(None, None)] * (2 - len(d.candidates))
        return {"time": time.time(), "source": src, "track_id": d.track_id, "top1": c[0][0], "top1_score":
                c[0][1] and round(c[0][1], 4), "top2": c[1][0], "top2_score": c[1][1] and round(c[1][1], 4),
                "margin": round(d.margin, 4), "votes": votes, "votes_needed": f"{self.k} of {self.n}",
                "threshold": round(thr, 4), "margin_needed": round(margin, 4), "faces": d.faces}

    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        src = msg.tracked.frame.source_id
        now = msg.tracked.frame.pts if msg.tracked.frame.pts is not None else msg.tracked.frame.capture_time
        for d in msg.decisions:
            key = (src, d.track_id)
            votes = self._votes.setdefault(key, deque(maxlen=self.n))
            votes.append(d.face_identity)
            if key in self._done:
                continue
            who, count = Counter(v for v in votes if v).most_common(1)[0] if any(votes) else (None, 0)
            if who is not None and count >= self.k and d.claimed == who:
                live, live_score = self.liveness.verdict(key) if self.liveness is not None else ("live", None)
                if live == "pending":  # named, but not enough faces judged live or not yet
                    continue
                self._decided(key)
                why = {**self._why(src, d, list(votes)), "live_score": live_score}
                if live == "attack":
                    self._deny_attack(src, d, who, why)
                    continue
                last = self._last_grant.get(who)
                if last is not None and 0 <= now - last < self.cooldown_s:
                    self._write({**why, "decision": "cooldown", "identity": who,
                                 "detail": f"granted {now - last:.1f} s ago"})
                    continue
                self._last_grant[who] = now
                self._grant(who, why)
            elif d.unknown:
                self._decided(key)
                why = self._why(src, d, list(votes))
                self._write({**why, "decision": "denied", "identity": None})
                if self.publish:
                    self.publish("access.denied", {"source": src, "track_id": d.track_id, "reason": "unknown face"})
        for e in msg.ended:
            self._votes.pop((src, e.ended.track_id), None)
            self._done.discard((src, e.ended.track_id))
            if self.liveness is not None:
                self.liveness.forget((src, e.ended.track_id))

    def _decided(self, key: tuple[str, int]) -> None:
        """Granted or denied: the track's later faces are neither voted on nor scored for liveness."""
        self._done.add(key)
        if self.liveness is not None:
            self.liveness.settle(key)

    def _deny_attack(self, src: str, d: TrackDecision, who: str, why: dict[str, Any]) -> None:
        """Named, but the faces are not live: a print or a screen held up. Denied, with the score, audited."""
        self._write({**why, "decision": "denied", "identity": None, "claimed": who, "reason": "presentation attack"})
        log.warning("access_denied_presentation_attack", source=src, claimed=who, live_score=why["live_score"])
        if self.publish:
            self.publish("access.denied", {"source": src, "track_id": d.track_id, "reason": "presentation attack",
                                           "claimed": who, "live_score": why["live_score"]})

    def _grant(self, who: str, why: dict[str, Any]) -> None:
        event = {"source": why["source"], "track_id": why["track_id"], "identity": who, "score": why["top1_score"],
                 "margin": why["margin"], "votes": why["votes"], "live_score": why.get("live_score")}
        if self.publish:
            self.publish("access.granted", event)

        def act() -> None:
            result: dict[str, Any] | None = None
            if self.command or self.zmq_req:  # the runner every action uses; it never raises
                result = run_target(ActionTarget(tuple(self.command or ()), None, self.zmq_req,
                                                 self.action_timeout_s), event)
            self._write({**why, "decision": "granted", "identity": who, "action": result})
            log.info("access_granted", identity=who, action=result)

        worker = threading.Thread(target=act, name="door-action", daemon=True)
        worker.start()
        self._workers.append(worker)

    def source_ended(self, source_id: str) -> None:
        for key in [k for k in self._votes if k[0] == source_id]:
            self._votes.pop(key, None)
            self._done.discard(key)
            if self.liveness is not None:
                self.liveness.forget(key)

    def close(self) -> None:
        """Wait for running actions (each bounded by its timeout), then close the audit log."""
        for w in self._workers:
            w.join(self.action_timeout_s + 1.0)
        self._audit.close()
