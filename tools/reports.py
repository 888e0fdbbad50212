"""Report files of the offline commands (CSV tables and plots), mode 0600 whether created or reused:
they name people (paths, identities, confusions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.csv_files import write_dicts
from pipeline.private_files import open_private


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Write ``rows`` under a header of ``fields``; 0600, formulas escaped (pipeline/csv_files.py)."""
    write_dicts(path, fields, rows)


def save_figure(fig: Any, path: str | Path, dpi: int) -> None:
    """``fig.savefig`` into a 0600 file (matplotlib would create it 0666 less the umask, and keep an existing
    file's mode); the format follows the suffix, PNG when there is none."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in (known := fig.canvas.get_supported_filetypes()):  # before the file is created or truncated
        raise ValueError(f"cannot write a plot to {path}: unknown format {fmt!r} (use one of {', '.join(known)})")
    with open_private(path, "wb") as f:
        fig.savefig(f, dpi=dpi, format=fmt)
