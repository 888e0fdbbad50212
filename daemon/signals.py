"""A stop asked for while the daemon is still starting (no heavy imports here: the console script installs
these handlers before it imports anything else, and the runner reads them once it has its own)."""

from __future__ import annotations

import os
import signal

_requested: list[int] = []


def _early(signum: int, _frame: object) -> None:
    if _requested:  # a second signal while starting: out at once, as when running
        os._exit(130)
    _requested.append(signum)


def install_early() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _early)


def stop_requested() -> int | None:
    """The signal that arrived before the daemon installed its own handlers, if one did."""
    return _requested[0] if _requested else None
