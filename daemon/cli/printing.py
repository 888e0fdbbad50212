"""How commands print results: one JSON document, or aligned ``key  value`` lines / one line per row."""

from __future__ import annotations

import json
from typing import Any


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def print_rows(rows: list[dict[str, Any]], as_json: bool, line: str) -> None:
    """A JSON array, or one ``line.format(**row)`` per row."""
    if as_json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(line.format(**r))


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """A JSON object, or one aligned ``key  value`` line per item."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
