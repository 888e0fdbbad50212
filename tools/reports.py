"""Report files of the offline commands (CSV tables), created 0600: they name people."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Write ``rows`` under a header of ``fields``; the file is (re)created with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
