"""The attendance book: at most one mark per (site, period, identity), and the marks of a day.

The embedded backend is one SQLite file (0600, marked with its own application id so a gallery or another
application's database is never taken for one). ``open_book`` picks the backend from the location.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

from pipeline.private_files import check_output, open_private


class AttendanceStore(Protocol):
    """What the attendance profile needs of a book."""

    site: str

    def mark(self, identity: str, epoch: float, period: str, source: str, score: float) -> bool:
        """True when this is the identity's first mark in ``period`` (it is stored); False when it had one."""

    def marks(self, day: str) -> list[dict[str, Any]]:
        """The marks of ``day`` (YYYY-MM-DD, every period of it), oldest first."""

    def expire(self, before: float, dry_run: bool = False) -> int:
        """Delete (unless ``dry_run``) every mark first seen before the epoch ``before``, of every site, so that
        its bytes are gone from the store; how many there were."""

    def close(self) -> None: ...


def open_book(location: str | Path, site: str = "site", readonly: bool = False,
              spool_dir: Path | None = None) -> AttendanceStore:
    """The attendance book at ``location``: a file path (SQLite), or a ``postgresql://`` URL (the whole site's
    book; marks spool under ``spool_dir`` while the database is down)."""
    from pipeline.pg import is_pg_url

    if is_pg_url(location):
        from daemon.stores.postgres import PgBook

        return PgBook(str(location), site, readonly, spool_dir)
    return SqliteBook(Path(location), site, readonly)


APP_ID = 0x46535441  # "FSTA": marks the file as a facestream attendance book
SCHEMA_VERSION = 1


def check_book(path: Path | str, must_exist: bool = False) -> None:
    """Refuse, without writing a byte, a file that is not an attendance book: a gallery, another application's
    database, a file that is not SQLite. A missing or empty file is a new book (unless ``must_exist``). A
    database URL: reachable, and ours or empty."""
    from pipeline.gallery.sqlite import APP_ID as GALLERY_APP_ID
    from pipeline.gallery.sqlite import SQLITE_MAGIC
    from pipeline.pg import is_pg_url

    if is_pg_url(path):
        from daemon.stores.postgres import check_pg_store

        check_pg_store(str(path), "attendance", "attendance.db", must_exist)
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"attendance book {path} is a folder, not a file")
    if not path.exists() or path.stat().st_size == 0:
        if must_exist:
            raise ValueError(f"attendance book {path} does not exist")
        return
    with path.open("rb") as f:
        if f.read(16) != SQLITE_MAGIC:
            raise ValueError(f"{path} is not an attendance book (not an SQLite database)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path} is not an attendance book (damaged SQLite file: {exc})") from None
    if app == GALLERY_APP_ID:
        raise ValueError(f"{path} is a facestream gallery, not an attendance book")
    if app not in (0, APP_ID) or (app == 0 and not tables <= {"marks"}):
        raise ValueError(f"{path} is not an attendance book (an SQLite database of another application)")


class SqliteBook:
    """The marks of one site: at most one per identity and period. ``readonly`` (reports) never writes: not a
    table, not a mode bit."""

    def __init__(self, path: Path, site: str = "site", readonly: bool = False) -> None:
        check_book(path, must_exist=readonly)
        self.path, self.site = path, site
        self._lock = threading.Lock()
        if readonly:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            if not {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}:
                self._db.close()
                raise ValueError(f"attendance book {path} holds no marks table (nobody was ever marked)")
            return
        check_output(path, "attendance.db")
        open_private(path, "a").close()  # 0600: the book names people (appending nothing changes no byte)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        try:
            self._db.executescript(
                "BEGIN; CREATE TABLE IF NOT EXISTS marks (site TEXT, period TEXT, identity TEXT, first_seen REAL, "
                "source TEXT, score REAL, PRIMARY KEY (site, period, identity)); "
                f"PRAGMA application_id = {APP_ID}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"attendance book {path} is not an attendance book: {exc}") from None

    def mark(self, identity: str, epoch: float, period: str, source: str, score: float) -> bool:
        """True when this is the identity's first mark in ``period`` (it is stored); False when it had one."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO marks VALUES (?, ?, ?, ?, ?, ?)",
                                   (self.site, period, identity, epoch, source, score))
            self._db.commit()
            return cur.rowcount == 1

    def marks(self, day: str) -> list[dict[str, Any]]:
        with self._lock:  # the HTTP API reads the day's report while the events stage marks
            rows = self._db.execute("SELECT period, identity, first_seen, source, score FROM marks WHERE site = ? "
                                    "AND (period = ? OR period LIKE ?) ORDER BY first_seen",
                                    (self.site, day, f"{day} %")).fetchall()
        return [{"period": p, "identity": i, "first_seen": dt.datetime.fromtimestamp(t).isoformat(timespec="seconds"),
                 "source": s, "score": sc} for p, i, t, s, sc in rows]

    def expire(self, before: float, dry_run: bool = False) -> int:
        """``secure_delete`` overwrites the freed pages with zeros; VACUUM then rebuilds the file without them."""
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM marks WHERE first_seen < ?", (before,)).fetchone()[0]
            if n and not dry_run:
                self._db.execute("PRAGMA secure_delete = ON")
                self._db.execute("DELETE FROM marks WHERE first_seen < ?", (before,))
                self._db.commit()
                self._db.execute("VACUUM")
            return n

    def close(self) -> None:
        self._db.close()
