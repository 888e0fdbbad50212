"""Where facestream keeps what it derives on this machine (cached embeddings, exported and converted models)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/facestream``, else ``~/.cache/facestream``."""
    base = os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    return Path(base) / "facestream"
