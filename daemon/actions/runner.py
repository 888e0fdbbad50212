"""One action run: a command, a webhook POST or a ZeroMQ request, each bounded by its timeout, each returning a
result record (never raising) that the caller logs or audits."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ActionTarget:
    """What to do: exactly one of ``command`` (argv), ``webhook`` (URL) or ``zmq_req`` (address)."""

    command: tuple[str, ...] = ()
    webhook: str | None = None
    zmq_req: str | None = None
    timeout_s: float = 5.0
    retries: int = 2  # webhook only: further attempts after a failed one
    backoff_s: float = 0.5  # webhook only: first wait between attempts, doubled each time
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if sum(map(bool, (self.command, self.webhook, self.zmq_req))) != 1:
            raise ValueError("an action needs exactly one of command, webhook or zmq_req")
        if self.timeout_s <= 0:
            raise ValueError(f"action timeout must be > 0 s, got {self.timeout_s}")


def run_command(argv: list[str] | tuple[str, ...], event: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """argv run without a shell, the event JSON on stdin; killed when it outlives ``timeout_s``."""
    t0 = time.monotonic()
    try:
        r = subprocess.run(list(argv), input=json.dumps(event), capture_output=True, text=True, timeout=timeout_s)
        return {"kind": "command", "exit_code": r.returncode, "ok": r.returncode == 0, "timed_out": False,
                "stderr": r.stderr.strip()[-200:], "took_s": round(time.monotonic() - t0, 3)}
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        return {"kind": "command", "exit_code": None, "ok": False, "timed_out": True,
                "took_s": round(time.monotonic() - t0, 3)}
    except OSError as exc:
        return {"kind": "command", "exit_code": None, "ok": False, "timed_out": False, "error": str(exc)}


def request_zmq(addr: str, event: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    import zmq

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    t0 = time.monotonic()
    try:
        sock.connect(addr)
        sock.send_string(json.dumps(event))
        if sock.poll(int(timeout_s * 1000)):
            reply = sock.recv_string()
            return {"kind": "zmq", "ok": True, "reply": reply[:200], "timed_out": False,
                    "took_s": round(time.monotonic() - t0, 3)}
        return {"kind": "zmq", "ok": False, "timed_out": True, "took_s": round(time.monotonic() - t0, 3)}
    finally:
        sock.close()


def post_webhook(target: ActionTarget, event: dict[str, Any]) -> dict[str, Any]:
    """POST the event JSON; urllib3 retries connection errors and 429/5xx answers with a doubling backoff."""
    import urllib3

    retry = urllib3.Retry(total=target.retries, connect=target.retries, read=target.retries,
                          status=target.retries, backoff_factor=target.backoff_s, allowed_methods=None,
                          status_forcelist=(429, 500, 502, 503, 504), raise_on_status=False)
    t0 = time.monotonic()
    try:
        r = urllib3.request("POST", target.webhook, body=json.dumps(event).encode(), retries=retry,
                            headers={"Content-Type": "application/json", **target.headers},
                            timeout=urllib3.Timeout(total=target.timeout_s))
        return {"kind": "webhook", "status": r.status, "ok": 200 <= r.status < 300, "timed_out": False,
                "took_s": round(time.monotonic() - t0, 3)}
    except urllib3.exceptions.HTTPError as exc:
        timed_out = isinstance(exc, urllib3.exceptions.TimeoutError) or "timed out" in str(exc).lower()
        return {"kind": "webhook", "status": None, "ok": False, "timed_out": timed_out, "error": str(exc)[:200],
                "took_s": round(time.monotonic() - t0, 3)}


def run_target(target: ActionTarget, event: dict[str, Any]) -> dict[str, Any]:
    """Do ``target`` for ``event``; a result record, never an exception (a broken controller must not stall
    or crash the pipeline)."""
    try:
        if target.command:
            return run_command(target.command, event, target.timeout_s)
        if target.webhook:
            return post_webhook(target, event)
        return request_zmq(str(target.zmq_req), event, target.timeout_s)
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:200]}
