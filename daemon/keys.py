"""ZeroMQ CURVE keys and the bind-address policy.

Events name people, so the publisher listens on loopback unless it is given a CURVE key pair (or the
settings say ``sinks.insecure = true``). Key files are ZeroMQ's own certificate format
(``zmq.auth.create_certificates``): ``NAME.key`` holds the public key, ``NAME.key_secret`` both.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from pipeline.private_files import open_private

SERVER_NAME = "server"
ZMQ_ADDRESS = re.compile(r"^(tcp|ipc|inproc)://\S+$")
_TCP = re.compile(r"^tcp://(?:(?P<iface>[^:;\[\]]+);)?(?P<host>\[[^\]]*\]|[^:]*):(?P<port>[^:]+)$")


def is_loopback(addr: str) -> bool:
    """True when binding ``addr`` is reachable from this machine only: ``tcp://`` on 127.x.x.x, ::1 or
    localhost, or ``ipc://`` / ``inproc://``. ``*``, ``0.0.0.0``, interface names and other hosts are not."""
    if addr.startswith(("ipc://", "inproc://")):
        return True
    m = _TCP.match(addr)
    if m is None:
        return False
    host = m.group("host").strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def generate(out_dir: Path, force: bool = False) -> tuple[Path, Path]:
    """Write ``server.key`` and ``server.key_secret`` in ``out_dir``, both 0600 from the first byte;
    existing key files are replaced only with ``force`` (clients holding the old public key stop working)."""
    import zmq.auth

    if not out_dir.is_dir():
        raise ValueError(f"key folder {out_dir} does not exist")
    public, secret = out_dir / f"{SERVER_NAME}.key", out_dir / f"{SERVER_NAME}.key_secret"
    existing = [p for p in (public, secret) if p.exists()]
    if existing and not force:
        raise ValueError(f"{existing[0]} exists; pass --force to replace the key pair")
    for p in (public, secret):
        # zmq writes with open(..., "w"): truncating a file keeps its mode, so the secret is never
        # readable by others, not even between its creation and a chmod.
        open_private(p, "w").close()
    made = zmq.auth.create_certificates(out_dir, SERVER_NAME)
    if (Path(made[0]), Path(made[1])) != (public, secret):
        raise RuntimeError(f"zmq wrote its certificates as {made}, expected {public} and {secret}")
    return public, secret


def load_public(path: Path, what: str) -> bytes:
    """The public key from a ZeroMQ certificate file (public or secret)."""
    public, _ = _load(path, what)
    return public


def load_secret(path: Path, what: str) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` certificate file that only its owner can read."""
    mode = os.stat(path).st_mode & 0o777 if path.is_file() else 0
    if mode & 0o077:
        raise ValueError(f"{what}: {path} is readable by others (mode {mode:o}); run chmod 600 {path}")
    public, secret = _load(path, what)
    if secret is None:
        raise ValueError(f"{what}: {path} holds no secret key (pass the .key_secret file)")
    return public, secret


def _load(path: Path, what: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise ValueError(f"{what}: key file {path} does not exist")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: {path} is not a ZeroMQ certificate ({exc})") from None
    if not public or len(public) != 40:
        raise ValueError(f"{what}: {path} is not a ZeroMQ certificate (no 40-character public key)")
    return public, secret
