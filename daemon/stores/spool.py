"""The local spool of a store in a database: records written while the database is down, kept in a JSON-lines
file (0600, each line flushed and fsynced) until they are in the database.

A daemon holds its spool file with an exclusive ``flock``; a second daemon of the same store on the host gets
a file of its own (``NAME.PID.jsonl``). Draining renames the file aside first, so records keep landing in a
fresh one while the old ones are written; the aside file is deleted only once its transaction committed. A
spool left by a daemon that died is drained by the next one that finds it unlocked. Replays must therefore
be idempotent, which the stores make them (a mark's key, an audit record's id).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

from pipeline.private_files import open_private


class Spool:
    def __init__(self, folder: Path, name: str) -> None:
        folder = folder.expanduser()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder, self.name = folder, name
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self.path = self._claim(folder / f"{name}.jsonl") or self._claim(folder / f"{name}.{os.getpid()}.jsonl")
        if self.path is None:
            raise ValueError(f"cannot lock a spool file for {name} in {folder}")
        self.spooled = 0

    def _claim(self, path: Path) -> Path | None:
        f = open_private(path, "a", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        self._file = f
        return path

    def add(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            assert self._file is not None
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.spooled += 1

    def _aside(self) -> None:
        """Move the records spooled so far to ``NAME...draining-N``, keep spooling into a fresh file."""
        with self._lock:
            assert self._file is not None and self.path is not None
            if self._file.tell() == 0:
                return
            os.rename(self.path, self.path.with_name(f"{self.path.name}.draining-{time.time_ns()}"))
            old = self._file
            if self._claim(self.path) is None:  # a fresh file at the same name, locked by us
                raise OSError(f"spool {self.path} was taken while draining")
            old.close()

    def _abandoned(self) -> list[Path]:
        """Spool files of this store that no live daemon holds (one that died, or an earlier run)."""
        out = []
        assert self.path is not None
        for p in sorted(self.folder.glob(f"{self.name}.*")):
            if p == self.path or p.name.startswith(f"{self.path.name}.draining-"):
                continue
            with open(p, "a") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
            out.append(p)
        return out

    def pending(self) -> list[tuple[Path, list[dict[str, Any]]]]:
        """Files whose records wait for the database, with their records (a torn last line skipped)."""
        self._aside()
        assert self.path is not None
        files = sorted(self.folder.glob(f"{self.path.name}.draining-*")) + self._abandoned()
        out = []
        for p in files:
            records = []
            for line in p.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
            out.append((p, records))
        return out

    def waiting(self) -> bool:
        assert self.path is not None
        with self._lock:
            own = self._file is not None and self._file.tell() > 0
        return own or any(self.folder.glob(f"{self.path.name}.draining-*")) or bool(self._abandoned())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                empty = self._file.tell() == 0
                self._file.close()
                self._file = None
                if empty and self.path is not None:
                    self.path.unlink(missing_ok=True)
