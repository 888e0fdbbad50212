"""What every settings section shares: the one-line error type and the existing-file check."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """The configuration file or environment is unusable; the message is one line."""


def existing_file(path: Path | None, message: str) -> Path | None:
    """``path`` unchanged when it is None or an existing file; else a ValueError of ``message`` with the path."""
    if path is not None and not path.expanduser().is_file():
        raise ValueError(message.format(path))
    return path
