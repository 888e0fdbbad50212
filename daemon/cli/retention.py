"""``facestream retention run``: apply ``[retention]`` now, or list what it would remove (``--dry-run``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from daemon.cli.common import settings_from
from daemon.cli.printing import CliError


def cmd_retention_run(args: argparse.Namespace) -> int:
    from daemon.stores.retention import enforce

    settings = settings_from(args)
    if not settings.retention.any:
        raise CliError("no retention limit is set: give [retention] events_days, audit_days, attendance_days or "
                       "analyses_days in the config")
    removed = enforce(settings, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "removed": [r.as_dict() for r in removed]}))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        print(f"{verb:<13} {r.what:<10} {r.path}  ({r.detail})")
    if not removed:
        print("nothing is older than the retention limits")
    return 0


def add_commands(sub: Any) -> None:
    ret = sub.add_parser("retention", help="delete records older than [retention] allows").add_subparsers(
        dest="action", required=True)
    rr = ret.add_parser("run", help="apply the limits now (a running daemon also does, at start and hourly)")
    rr.add_argument("--dry-run", action="store_true", help="list what would be removed; change nothing")
    rr.add_argument("--json", action="store_true")
    rr.set_defaults(func=cmd_retention_run)
