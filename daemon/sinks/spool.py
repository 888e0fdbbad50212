"""The MQTT sink's outage spool: messages not yet acknowledged by the broker, on disk (SQLite, 0600), in order.

Every message goes through it (one small insert per event, not per frame), so a broker that is down, a daemon
that stops before the broker is back, or a crash loses nothing: the next start sends what is left, oldest first.
Bounded: beyond ``max_rows`` the oldest are dropped and counted. A message leaves the spool only when the broker
acknowledged it (QoS 1 PUBACK), so ``delete`` is called from the client's acknowledgement.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from pipeline.private_files import check_output, open_private

APP_ID = 0x46534D51  # "FSMQ"


@dataclass(frozen=True)
class Spooled:
    seq: int
    topic: str
    payload: bytes
    retain: bool


class Spool:
    def __init__(self, path: Path, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError(f"mqtt spool size must be >= 1, got {max_rows}")
        self.path = check_output(path, "mqtt.spool")
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise ValueError(f"mqtt.spool {self.path} is not a facestream MQTT spool (not SQLite)")
        open_private(self.path, "a").close()
        self.max_rows = max_rows
        self._left: int | None = None  # once closed: what it held then
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            app = self._db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if app not in (0, APP_ID) or (app == 0 and tables):
                raise ValueError(f"mqtt.spool {self.path} is an SQLite database of another application")
            self._db.executescript(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                "payload BLOB NOT NULL, retain INTEGER NOT NULL); "
                "CREATE TABLE IF NOT EXISTS announced (topic TEXT PRIMARY KEY); "
                f"PRAGMA application_id = {APP_ID};")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"mqtt.spool {self.path} is not a facestream MQTT spool: {exc}") from None
        except ValueError:
            self._db.close()
            raise

    def add(self, topic: str, payload: bytes, retain: bool) -> int:
        """Append one message; returns how many old ones were dropped to stay within the bound."""
        with self._lock:
            self._db.execute("INSERT INTO spool (topic, payload, retain) VALUES (?, ?, ?)",
                             (topic, payload, int(retain)))
            over = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0] - self.max_rows
            if over > 0:
                self._db.execute("DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?)",
                                 (over,))
            return max(0, over)

    def after(self, seq: int, limit: int) -> list[Spooled]:
        """Up to ``limit`` messages newer than ``seq``, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload, retain FROM spool WHERE seq > ? ORDER BY seq "
                                    "LIMIT ?", (seq, limit)).fetchall()
        return [Spooled(s, t, bytes(p), bool(r)) for s, t, p, r in rows]

    def delete(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            if self._left is not None:
                return self._left
            return self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    def announced(self) -> set[str]:
        """Discovery config topics published earlier (to clear those of sources no longer configured)."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT topic FROM announced")}

    def set_announced(self, topics: set[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM announced")
            self._db.executemany("INSERT INTO announced VALUES (?)", [(t,) for t in sorted(topics)])
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._left is None:
                self._left = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
                self._db.close()
