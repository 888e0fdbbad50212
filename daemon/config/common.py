"""What every settings section shares: the one-line error type, the existing-file check, and a store's
location (a file path, or a ``postgresql://`` URL that carries no password)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, StringConstraints


def _no_password(value: object) -> object:
    from pipeline.pg import is_pg_url, parse_url

    if is_pg_url(value):
        parse_url(str(value), "")  # a ValueError of one line when it holds a password
    return value


# A record store's location: a path (SQLite book, JSON-lines audit) or a database URL (PostgreSQL), checked
# before the union is tried (a refused URL must not fall back to being read as a path).
StoreLocation = Annotated[Annotated[str, StringConstraints(pattern=r"^postgres(ql)?://")] | Path,
                          BeforeValidator(_no_password)]


class ConfigError(ValueError):
    """The configuration file or environment is unusable; the message is one line."""


def existing_file(path: Path | None, message: str) -> Path | None:
    """``path`` unchanged when it is None or an existing file; else a ValueError of ``message`` with the path."""
    if path is not None and not path.expanduser().is_file():
        raise ValueError(message.format(path))
    return path
