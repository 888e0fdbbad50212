"""CSV files we write (timelines, attendance reports, gallery and evaluation reports): 0600, and every text
cell that a spreadsheet would run as a formula is escaped.

A cell starting with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is a formula to Excel,
LibreOffice and Google Sheets: an identity named ``=HYPERLINK(...)`` would run when an operator opens the
timeline. Such text gets a leading ``'`` (OWASP's advice), which spreadsheets show as text; numbers are
written as they are (a negative score stays a number).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.private_files import open_private

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as it is safe to put in a CSV cell."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_rows(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A header and rows of cells; the file is created, or truncated and tightened, 0600."""
    with open_private(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([csv_cell(h) for h in header])
        w.writerows([csv_cell(v) for v in row] for row in rows)


def write_dicts(path: str | os.PathLike[str], fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Rows as dicts under ``fields`` (missing keys empty, as csv.DictWriter does)."""
    write_rows(path, fields, ([r.get(k, "") for k in fields] for r in rows))
