"""A pipeline stage: one thread, a bounded input queue, a bounded output queue, and counters.

Stages pass messages in order; ``SourceStatus`` and ``Shutdown`` flow through every stage so the
last stage knows when a file ended and when to stop. Blocking puts give back-pressure end to end.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any

import structlog

from pipeline.types import Shutdown, SourceStatus

log = structlog.get_logger(__name__)


class Stage:
    """Subclasses name the message types they take in ``accepts`` and implement :meth:`process` (one message
    in, zero or more out via :meth:`emit`). A ``SourceStatus`` goes to :meth:`on_status`, which passes it on
    unless a stage has something to do when a stream opens or ends; anything else is a bug, raised."""

    name = "stage"
    accepts: tuple[type, ...] = ()

    def __init__(self, inq: queue.Queue[Any], outq: queue.Queue[Any] | None) -> None:
        self.inq = inq
        self.outq = outq
        self.processed = 0
        self.busy_s = 0.0
        self.errors = 0
        self.error: BaseException | None = None
        # Messages a stage took off its queue early (to batch) and hands back to be handled in order.
        self.backlog: deque[Any] = deque()
        self._thread = threading.Thread(target=self._loop, name=f"stage-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def emit(self, msg: Any) -> None:
        if self.outq is not None:
            self.outq.put(msg)

    def handle(self, msg: Any) -> None:
        if isinstance(msg, SourceStatus):
            self.on_status(msg)
        elif isinstance(msg, self.accepts):
            self.process(msg)
        else:
            raise ValueError(f"{self.name} stage got an unexpected message {type(msg).__name__}")

    def on_status(self, msg: SourceStatus) -> None:
        self.emit(msg)

    def process(self, msg: Any) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Called once before Shutdown is passed on: emit anything held back."""

    def handle_failed(self, msg: Any) -> None:
        """Called after ``handle`` raised on ``msg``: forward what can still be forwarded (a stage must
        never swallow a source's status or the end of its tracks). Statuses pass unchanged here."""
        if isinstance(msg, SourceStatus):
            self.emit(msg)

    def _loop(self) -> None:
        while True:
            msg = self.backlog.popleft() if self.backlog else self.inq.get()
            if isinstance(msg, Shutdown):
                try:
                    self.flush()
                except Exception as exc:  # keep shutting down; report it
                    self.error = exc
                    log.exception("stage_flush_failed", stage=self.name)
                self.emit(msg)
                return
            t0 = time.perf_counter()
            try:
                self.handle(msg)
            except Exception as exc:
                # One bad frame must not kill the daemon: log it, count it, forward what we can, carry on.
                self.error = exc
                self.errors += 1
                log.exception("stage_message_failed", stage=self.name)
                try:
                    self.handle_failed(msg)
                except Exception:
                    log.exception("stage_forward_failed", stage=self.name)
            self.busy_s += time.perf_counter() - t0
            self.processed += 1
