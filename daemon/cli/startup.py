"""The console script's first step: a stop asked for while the daemon is still starting is honoured.

Loading settings, models and the gallery takes seconds; a SIGTERM in that time (systemd stopping a unit it
just started, an operator's Ctrl-C) used to kill the process with 143 and nothing logged. The handlers are
installed before anything heavy is imported: the first signal is remembered and the daemon, once built,
drains at once and exits 0 with its ``daemon_stopped`` line; a second signal exits at once with 130, as it
does when running.
"""

from __future__ import annotations

import sys

from daemon.signals import install_early

LONG_RUNNING = frozenset({"run", "serve"})


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
        install_early()
    from daemon.cli.parser import main as cli_main

    sys.exit(cli_main())
