"""``facestream keys generate``: the CURVE key pair for publishing events beyond loopback."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from daemon.cli.common import settings_from
from daemon.cli.printing import print_result


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from daemon.sinks.keys import generate

    settings_from(args)
    public, secret = generate(Path(args.out), args.force)
    print_result({"public_key": str(public), "secret_key": str(secret)}, args.json)
    return 0


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="CURVE keys for the ZeroMQ publisher").add_subparsers(dest="action",
                                                                                            required=True)
    kg = keys.add_parser("generate", help="write server.key (public, for subscribers) and server.key_secret "
                         "(for sinks.zmq_secret_key), both mode 0600")
    kg.add_argument("--out", required=True, help="folder to write the key pair in")
    kg.add_argument("--force", action="store_true", help="replace an existing key pair")
    kg.add_argument("--json", action="store_true")
    kg.set_defaults(func=cmd_keys_generate)
