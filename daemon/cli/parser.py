"""The ``facestream`` console script: one parser, each command group adding its own subcommands, one-line
errors."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from daemon.cli import bench, evaluate, gallery, keys, models, photos, profiles, retention, run, search
from daemon.cli.printing import CliError

COMMAND_GROUPS = (models, photos, evaluate, bench, gallery, run, profiles, search, keys, retention)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facestream", description="Real-time face recognition daemon and tools.")
    p.add_argument("--config", help="TOML settings file (FACESTREAM_* environment variables also apply)")
    sub = p.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    _config_everywhere(p)
    return p


def _config_everywhere(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """Accept ``--config`` after the subcommand too (``facestream run --config F``). SUPPRESS keeps a value
    given before the subcommand when it is not repeated after it."""
    if not top:
        parser.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                _config_everywhere(child, top=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("facestream: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, FileNotFoundError, RuntimeError, OSError, sqlite3.Error) as exc:
        return _error(exc)
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "psycopg":  # a database lost mid-command: one line too
            raise
        return _error(exc)


def _error(exc: BaseException) -> int:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"facestream: error: {msg}", file=sys.stderr)
    return 2
