"""Daily files of a JSON-lines log: ``events.jsonl`` is renamed ``events.2026-12-02.jsonl`` when the first line
of a new local day is written, so retention can delete whole days without touching the file a daemon writes."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path


def dated_name(path: Path, day: dt.date) -> Path:
    return path.with_name(f"{path.stem}.{day.isoformat()}{path.suffix}")


def dated_files(path: Path) -> list[tuple[dt.date, Path]]:
    """The day files of the log ``path`` (not ``path`` itself), oldest first."""
    pattern = re.compile(rf"^{re.escape(path.stem)}\.(\d{{4}}-\d{{2}}-\d{{2}})(\.\d+)?{re.escape(path.suffix)}$")
    out = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = pattern.match(p.name)
            if m and p.is_file() and not p.is_symlink():
                try:
                    out.append((dt.date.fromisoformat(m[1]), p))
                except ValueError:
                    continue
    return sorted(out)


def file_day(fd: int) -> dt.date:
    """The local day a log file was last written (its mtime): the day its newest lines belong to."""
    return dt.date.fromtimestamp(os.fstat(fd).st_mtime)


def rotate(path: Path, day: dt.date) -> Path:
    """Rename the log to its day file (a second rotation the same day gets a numbered name, never overwrites)."""
    target, n = dated_name(path, day), 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{day.isoformat()}.{n}{path.suffix}")
        n += 1
    os.rename(path, target)
    return target
