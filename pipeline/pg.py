"""PostgreSQL, shared by the gallery backend and the site's stores (attendance book, door audit): what a
``postgresql://`` location may hold, connecting with one-line errors, and claiming a database for a store.

A password never travels in the URL: it is visible in ``ps``, shell history and unit files. libpq finds it
itself in ``PGPASSFILE`` (or ``~/.pgpass``), ``passfile=`` in the URL, or ``PGPASSWORD``, so a URL with one is
refused before anything connects, and no message ever repeats a URL as given.

Every facestream table lives in the schema ``facestream``; ``facestream.stores`` says which stores (gallery,
attendance, audit) a database holds and at which schema version. A database with other tables and no such
registry belongs to another application and is refused without a write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

SCHEMES = ("postgresql://", "postgres://")
NOTIFY_CHANNEL = "facestream_gallery"
CONNECT_TIMEOUT_S = 3
_LOCK_KEY = 0x46535047  # "FSPG": one store created at a time in a database


class PgError(ValueError):
    """A PostgreSQL location that cannot be used: a password in it, no server, refused login, not ours; the
    message is one line and never holds a password."""


def is_pg_url(location: object) -> bool:
    """A ``postgresql://`` location (the URL as given, or a checked :class:`PgUrl`)."""
    return isinstance(location, str | PgUrl) and str(location).startswith(SCHEMES)


@dataclass(frozen=True)
class PgUrl:
    """A checked ``postgresql://`` location; ``str()`` is the URL without its query (what messages show),
    ``name`` the database (what callers without the API token are shown)."""

    url: str
    user: str
    host: str
    port: str
    dbname: str

    @property
    def name(self) -> str:
        return self.dbname

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"postgresql://{user}{self.host}{':' + self.port if self.port else ''}/{self.dbname}"

    def __fspath__(self) -> str:  # never a file: makes Path(url) an error instead of a mangled path
        raise TypeError(f"{self} is a database, not a file")


def parse_url(location: str, what: str = "database") -> PgUrl:
    """The URL checked: a PgError names ``what`` when it holds a password or cannot be parsed."""
    where = f"{what}: " if what else ""
    try:
        parts = urlsplit(location)
        password = parts.password
        query = parse_qs(parts.query)
    except ValueError:
        raise PgError(f"{where}not a valid postgresql:// URL") from None
    if password is not None or "password" in query:
        raise PgError(f"{where}the URL holds a password; never put one in a URL (it shows in ps and shell "
                      "history): give it in PGPASSFILE (or ~/.pgpass), passfile= in the URL, or PGPASSWORD")
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(location)
    except Exception:
        raise PgError(f"{where}not a valid postgresql:// URL") from None
    dbname = str(info.get("dbname") or "")
    if not dbname:
        raise PgError(f"{where}the URL names no database (postgresql://USER@HOST:PORT/DATABASE)")
    return PgUrl(location, str(info.get("user") or ""), str(info.get("host") or "localhost"),
                 str(info.get("port") or ""), dbname)


def reason(exc: Exception) -> str:
    """A driver error as one short line."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines()]
    text = "; ".join(line for line in lines if line) or type(exc).__name__
    text = re.sub(r"^connection failed: ", "", text)
    text = re.sub(r"connection to server at \"[^\"]*\"(, port \d+)? failed: ", "", text)
    text = text.replace("FATAL: ", "")
    if "no password supplied" in text:
        text += " (give it in PGPASSFILE, ~/.pgpass, passfile= in the URL, or PGPASSWORD)"
    return text[:300]


def connect(url: PgUrl, what: str = "database", timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """An autocommit connection (writes open their own transaction: a reader never sits idle in one), with
    TCP keepalives so a vanished server is noticed; a PgError of one line when it cannot be made."""
    import psycopg

    try:
        return psycopg.connect(url.url, autocommit=True, connect_timeout=max(1, round(timeout_s)),
                               application_name="facestream", keepalives=1, keepalives_idle=5,
                               keepalives_interval=2, keepalives_count=2, tcp_user_timeout=int(timeout_s * 1000))
    except psycopg.Error as exc:
        raise PgError(f"cannot connect to {what} {url}: {reason(exc)}") from None


def _registry(conn: Any) -> bool:
    return conn.execute("SELECT to_regclass('facestream.stores') IS NOT NULL").fetchone()[0]


def _foreign_tables(conn: Any) -> int:
    return conn.execute("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN "
                        "('pg_catalog', 'information_schema', 'facestream')").fetchone()[0]


def check_store(conn: Any, url: PgUrl, kind: str, version: int, what: str, must_exist: bool) -> bool:
    """Whether the database holds the store ``kind``; a PgError (nothing written) when it is another
    application's, holds a newer schema, or (``must_exist``) does not hold it."""
    if not _registry(conn):
        if _foreign_tables(conn):
            raise PgError(f"{url} is not a facestream {what} (a database of another application: it has tables "
                          "and no facestream.stores)")
        if must_exist:
            raise PgError(f"{url} holds no facestream {what}")
        return False
    row = conn.execute("SELECT schema_version FROM facestream.stores WHERE kind = %s", (kind,)).fetchone()
    if row is None:
        if must_exist:
            raise PgError(f"{url} holds no facestream {what}")
        return False
    if row[0] > version:
        raise PgError(f"{what} {url} has schema {row[0]}, newer than this facestream supports ({version}); "
                      "upgrade facestream")
    return True


def create_store(conn: Any, url: PgUrl, kind: str, version: int, what: str, ddl: str,
                 after: list[tuple[str, tuple]] | None = None) -> None:
    """Create the store's tables and register it, in one transaction (two hosts starting at once: the first
    creates, the second finds it)."""
    import time

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        if check_store(conn, url, kind, version, what, must_exist=False):
            return
        conn.execute("CREATE SCHEMA IF NOT EXISTS facestream")
        conn.execute("CREATE TABLE IF NOT EXISTS facestream.stores (kind TEXT PRIMARY KEY, schema_version INTEGER "
                     "NOT NULL, created DOUBLE PRECISION NOT NULL)")
        conn.execute(ddl)
        for sql, params in after or []:
            conn.execute(sql, params)
        conn.execute("INSERT INTO facestream.stores(kind, schema_version, created) VALUES (%s, %s, %s)",
                     (kind, version, time.time()))
