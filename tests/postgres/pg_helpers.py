"""A real PostgreSQL server run by the tests (see conftest.py), and what the tests ask of it."""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

PASSWORD = "right-horse-battery"


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PgServer:
    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.data = root / "data"

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)

    def init(self) -> None:
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "fs", "--no-sync")
        hba = self.data / "pg_hba.conf"
        text = hba.read_text()
        hba.write_text(f"host all fs_pw 127.0.0.1/32 scram-sha-256\n{text}")

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                          f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
                          "-c wal_level=minimal -c max_wal_senders=0", "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, db: str = "postgres", user: str = "fs") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres", params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def new_db(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')  # not the template through the WAL
        self.sql(f'GRANT ALL ON DATABASE "{name}" TO fs_pw')
        self.sql("GRANT ALL ON SCHEMA public TO fs_pw", name)
        return self.url(name)


def rows_naming(pg, db: str, name: str, shas: list[str]) -> dict[str, int]:
    """Rows of every gallery table with a text cell that holds the person's name or one of their photos' hashes
    (anywhere in it: a cache key is ``sha|context``)."""
    from pipeline.gallery.postgres import TABLES

    patterns = [f"%{v}%" for v in (name, *shas) if v]
    out = {}
    for table in TABLES:
        cols = [r[0] for r in pg.sql("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                     "'facestream' AND table_name = %s AND data_type = 'text'", db, (table,))]
        where = " OR ".join(f"{c} LIKE ANY(%s)" for c in cols)
        out[table] = pg.sql(f"SELECT count(*) FROM facestream.{table} WHERE {where}", db,
                            tuple([patterns] * len(cols)))[0][0]
    return out
