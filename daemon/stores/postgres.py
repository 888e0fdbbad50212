"""The attendance book and the audit logs in PostgreSQL, shared by every host of a site.

A mark is unique per (site, period, identity) by the table's key: two hosts that see the same person at the
same moment both ``INSERT ... ON CONFLICT``, and one row results (the earlier sighting kept), never a
read-then-write. An audit record gets an id when it is made, so writing it twice stores it once.

While the database is down nothing waits on it: marks and audit records go to the store's local spool
(``spool.py``, 0600) at once, and a background thread drains the spool in one transaction per file as soon
as a connection can be made again (every ``retry_s``). A mark that was spooled publishes no
``attendance.marked`` (whether it was the first could not be known); the book holds it once either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from daemon.stores.spool import Spool
from pipeline.pg import PgError, PgUrl, check_store, connect, create_store, parse_url, reason

log = structlog.get_logger(__name__)
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # an outage is logged once, as the store's own line

SCHEMA_VERSION = 1
MARKS_DDL = """
CREATE TABLE facestream.attendance_marks (
    site TEXT NOT NULL, period TEXT NOT NULL, identity TEXT NOT NULL, first_seen DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL, score DOUBLE PRECISION, host TEXT, PRIMARY KEY (site, period, identity));
"""
AUDIT_DDL = """
CREATE TABLE facestream.audit_records (
    id TEXT PRIMARY KEY, log TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, host TEXT, record JSONB NOT NULL);
CREATE INDEX audit_records_log_time ON facestream.audit_records(log, time);
"""
MARK_SQL = ("INSERT INTO facestream.attendance_marks AS m (site, period, identity, first_seen, source, score, host) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (site, period, identity) DO UPDATE SET "
            "first_seen = EXCLUDED.first_seen, source = EXCLUDED.source, score = EXCLUDED.score, host = EXCLUDED.host "
            "WHERE EXCLUDED.first_seen < m.first_seen RETURNING (xmax = 0)")
AUDIT_SQL = ("INSERT INTO facestream.audit_records (id, log, time, host, record) VALUES (%s, %s, %s, %s, %s) "
             "ON CONFLICT (id) DO NOTHING")
HOST = socket.gethostname()


def check_pg_store(location: str, kind: str, what: str, must_exist: bool = False) -> PgUrl:
    """Refuse, without a write, a database that cannot hold the store (unreachable, refused login, another
    application's, a newer schema); a one-line ValueError."""
    url = parse_url(location, what)
    conn = connect(url, what)
    try:
        check_store(conn, url, kind, SCHEMA_VERSION, what, must_exist)
    finally:
        conn.close()
    return url


def pg_store_exists(location: str, kind: str, what: str) -> bool:
    """Whether the database already holds the store (retention has nothing to do in one that does not)."""
    url = parse_url(location, what)
    conn = connect(url, what)
    try:
        return check_store(conn, url, kind, SCHEMA_VERSION, what, must_exist=False)
    finally:
        conn.close()


class PgStore:
    """What the book and the audit share: a small pool for the threads that write, the spool and its drain."""

    kind = ""
    ddl = ""

    def __init__(self, location: str, what: str, spool_dir: Path | None, readonly: bool = False,
                 retry_s: float = 0.5) -> None:
        from psycopg_pool import ConnectionPool

        self.url, self.what, self.retry_s = parse_url(location, what), what, retry_s
        conn = connect(self.url, what)
        try:
            if readonly:
                check_store(conn, self.url, self.kind, SCHEMA_VERSION, what, must_exist=True)
            else:
                create_store(conn, self.url, self.kind, SCHEMA_VERSION, what, self.ddl)
        finally:
            conn.close()
        self.pool = ConnectionPool(self.url.url, min_size=1, max_size=2, open=False, name=what,
                                   check=ConnectionPool.check_connection,
                                   kwargs={"autocommit": True, "connect_timeout": 3, "application_name": "facestream"})
        self.pool.open(wait=False)
        self.down = False
        self.spool: Spool | None = None
        self._stop = threading.Event()
        self._draining = threading.Lock()
        self._drainer: threading.Thread | None = None
        if not readonly:
            digest = hashlib.sha256(f"{self.url}|{what}".encode()).hexdigest()[:12]
            self.spool = Spool(spool_dir or Path("."), f"{self.kind}-{digest}")
            self._drainer = threading.Thread(target=self._drain_loop, name=f"{what}-spool", daemon=True)
            self._drainer.start()

    # ---- one record ---------------------------------------------------------------------------------
    def _write(self, sql: str, params: tuple) -> tuple | None:
        """The record in the database (the statement's row, if any); spooled, and None, while it is down."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if not self.down:
            try:
                with self.pool.connection(timeout=0.5) as conn:
                    cur = conn.execute(sql, params)
                    return (cur.fetchone() or ()) if cur.description else ()
            except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._lost(exc)
        assert self.spool is not None
        self.spool.add({"kind": self.kind, "params": list(params)})
        return None

    def _lost(self, exc: Exception) -> None:
        if not self.down:
            self.down = True
            log.warning("store_unreachable_spooling", store=self.what, database=str(self.url), error=reason(exc),
                        spool=str(self.spool.path if self.spool else None))

    # ---- the spool ----------------------------------------------------------------------------------
    def _statement(self) -> str:
        raise NotImplementedError

    def drain(self) -> int:
        """Write every spooled record (one transaction per spool file); the records written, or -1 when the
        database is still away. One drain at a time (the thread's, or the last one at close)."""
        with self._draining:
            return self._drain()

    def _drain(self) -> int:
        assert self.spool is not None
        if not self.spool.waiting():
            self.down = False
            return 0
        try:
            conn = connect(self.url, self.what)
        except PgError:
            return -1
        written = 0
        try:
            for path, records in self.spool.pending():
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(self._statement(), [tuple(r["params"]) for r in records])
                path.unlink(missing_ok=True)
                written += len(records)
        except Exception as exc:
            log.warning("spool_drain_failed", store=self.what, error=reason(exc))
            return -1
        finally:
            conn.close()
        if written:
            log.info("spool_drained", store=self.what, records=written)
        self.down = False
        return written

    def _drain_loop(self) -> None:
        while not self._stop.wait(self.retry_s):
            assert self.spool is not None
            if self.down or self.spool.waiting():
                self.drain()

    def close(self) -> None:
        self._stop.set()
        if self._drainer is not None:
            self._drainer.join(5.0)
            with contextlib.suppress(Exception):
                self.drain()  # what the database can still take; the rest waits in the spool for the next run
        if self.spool is not None:
            self.spool.close()
        self.pool.close()

    def _expire(self, count_sql: str, delete_sql: str, params: tuple, dry_run: bool) -> int:
        """Retention: count, then (unless ``dry_run``) delete in one transaction. PostgreSQL frees the rows'
        space at its next (auto)vacuum; the rows are gone from every query at once."""
        with self.pool.connection(timeout=5.0) as conn, conn.transaction():
            n = conn.execute(count_sql, params).fetchone()[0]
            if n and not dry_run:
                conn.execute(delete_sql, params)
        return int(n)


class PgBook(PgStore):
    """The attendance book of a site in PostgreSQL (``daemon.stores.attendance.AttendanceStore``)."""

    kind, ddl = "attendance", MARKS_DDL

    def __init__(self, location: str, site: str = "site", readonly: bool = False,
                 spool_dir: Path | None = None) -> None:
        self.site = site
        super().__init__(location, "attendance.db", spool_dir, readonly)

    def _statement(self) -> str:
        return MARK_SQL.removesuffix(" RETURNING (xmax = 0)")

    def mark(self, identity: str, epoch: float, period: str, source: str, score: float) -> bool:
        row = self._write(MARK_SQL, (self.site, period, identity, epoch, source, score, HOST))
        return bool(row and row[0])

    def marks(self, day: str) -> list[dict[str, Any]]:
        with self.pool.connection(timeout=5.0) as conn:
            rows = conn.execute("SELECT period, identity, first_seen, source, score FROM facestream.attendance_marks "
                                "WHERE site = %s AND (period = %s OR period LIKE %s) ORDER BY first_seen",
                                (self.site, day, f"{day} %")).fetchall()
        return [{"period": p, "identity": i, "first_seen": dt.datetime.fromtimestamp(t).isoformat(timespec="seconds"),
                 "source": s, "score": sc} for p, i, t, s, sc in rows]

    def expire(self, before: float, dry_run: bool = False) -> int:
        """Every mark first seen before the epoch ``before``, of every site (the book's retention is the site's)."""
        where = "FROM facestream.attendance_marks WHERE first_seen < %s"
        return self._expire(f"SELECT COUNT(*) {where}", f"DELETE {where}", (before,), dry_run)


class PgAudit(PgStore):
    """An audit log in PostgreSQL (``daemon.stores.audit.AuditStore``): ``log`` names which (door.audit,
    http.audit_log), each record kept whole as JSON."""

    kind, ddl = "audit", AUDIT_DDL

    def __init__(self, location: str, what: str = "audit log", spool_dir: Path | None = None,
                 readonly: bool = False) -> None:
        self.lines = 0
        self._count = threading.Lock()
        super().__init__(location, what, spool_dir, readonly)

    def _statement(self) -> str:
        return AUDIT_SQL

    def write(self, record: dict[str, Any]) -> None:
        body = json.dumps(record, ensure_ascii=False, default=str)
        self._write(AUDIT_SQL, (uuid.uuid4().hex, self.what, time.time(), HOST, body))
        with self._count:
            self.lines += 1

    def expire(self, before: float, dry_run: bool = False) -> int:
        """Every record of this log (door.audit or http.audit_log) written before the epoch ``before``."""
        where = "FROM facestream.audit_records WHERE log = %s AND time < %s"
        return self._expire(f"SELECT COUNT(*) {where}", f"DELETE {where}", (self.what, before), dry_run)
