"""The console script's first step: a stop asked for while the daemon is still starting is honoured.

Loading settings, models and the gallery takes seconds; a SIGTERM in that time (systemd stopping a unit it
just started, an operator's Ctrl-C) used to kill the process with 143 and nothing logged. The handlers are
installed before anything heavy is imported: the first signal is remembered and the daemon, once built,
drains at once and exits 0 with its ``daemon_stopped`` line; a second signal exits at once with 130, as it
does when running.
"""

from __future__ import annotations

import os
import signal
import sys

_requested: list[int] = []
LONG_RUNNING = frozenset({"run", "serve"})


def _early(signum: int, _frame: object) -> None:
    if _requested:
        os._exit(130)
    _requested.append(signum)


def stop_requested() -> int | None:
    """The signal that arrived before the daemon installed its own handlers, if one did."""
    return _requested[0] if _requested else None


def _command(argv: list[str]) -> str | None:
    """The subcommand, skipping ``--config FILE`` and other options before it."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main() -> None:
    if _command(sys.argv[1:]) in LONG_RUNNING:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _early)
    from daemon.cli import main as cli_main

    sys.exit(cli_main())
