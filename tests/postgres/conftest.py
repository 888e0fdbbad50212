"""One real PostgreSQL server for the session: ``initdb`` into a temporary folder owned by ``postgres`` and
``pg_ctl start`` on 127.0.0.1 on a free port (through ``runuser -u postgres --`` when the tests run as root:
PostgreSQL refuses to run as root), stopped with ``pg_ctl stop -m fast`` at the end. Role ``fs`` is trusted;
role ``fs_pw`` must give its password (scram-sha-256), for the wrong-password tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from daemon_helpers import free_port
from pg_helpers import PASSWORD, PgServer, pg_bindir


def _scratch() -> str | None:
    """A memory file system when there is room: the server's files are thrown away at the end, and on a disk
    mounted with ``discard`` unlinking thousands of written files takes seconds."""
    shm = "/dev/shm"
    try:
        return shm if shutil.disk_usage(shm).free > 1 << 30 else None
    except OSError:
        return None


@pytest.fixture(scope="session")
def pg() -> PgServer:
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    root = Path(tempfile.mkdtemp(prefix="facestream-pg-", dir=_scratch()))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PgServer(bindir, root, free_port())
    server.init()
    server.start()
    server.sql(f"CREATE ROLE fs_pw LOGIN PASSWORD '{PASSWORD}'")
    yield server
    try:
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
