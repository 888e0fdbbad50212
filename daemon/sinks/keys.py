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

from pipeline.private_files import check_output

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
    import tempfile

    import zmq.auth

    if not out_dir.is_dir():
        raise ValueError(f"key folder {out_dir} does not exist")
    public, secret = out_dir / f"{SERVER_NAME}.key", out_dir / f"{SERVER_NAME}.key_secret"
    for p in (public, secret):
        check_output(p, "keys generate")  # a symlink or folder there: refused before anything is written
    existing = [p for p in (public, secret) if p.exists()]
    if existing and not force:
        raise ValueError(f"{existing[0]} exists; pass --force to replace the key pair")
    # zmq writes its certificates by path with open(..., "w"). It writes them into a fresh private folder of
    # ours (0700: nothing can be planted there and nobody else can read them), and they are moved into place:
    # a rename replaces whatever entry is there, never a file it points at.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".keys-") as tmp:
        made = [Path(m) for m in zmq.auth.create_certificates(tmp, SERVER_NAME)]
        for m in made:
            m.chmod(0o600)
        if [m.name for m in made] != [public.name, secret.name]:
            raise RuntimeError(f"zmq wrote its certificates as {made}, expected {public.name} and {secret.name}")
        os.replace(made[1], secret)
        os.replace(made[0], public)
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
