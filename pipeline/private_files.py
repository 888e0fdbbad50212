"""Files that name people or hold keys (galleries, event logs, exports, reports, key files): mode 0600.

``os.open(..., 0o600)`` only sets the mode of a file it creates, so a file that already exists with a
looser mode (0644 from an older version, ``cp``, or a umask) is tightened as it is opened for writing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any

PRIVATE_MODE = 0o600

_FLAGS = {
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
}


def open_private(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for writing ("w", "a", "wb", "ab"), the file created or tightened to 0600."""
    if mode.rstrip("b") not in _FLAGS or mode.count("b") > 1:
        raise ValueError(f"open_private mode must be 'w', 'a', 'wb' or 'ab', got {mode!r}")
    fd = os.open(path, _FLAGS[mode.rstrip("b")] | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def tighten(path: str | os.PathLike[str]) -> bool:
    """Make an existing file 0600 when group or others may access it; True when the mode changed.

    A file owned by someone else cannot be changed by us; that is left to its owner (PermissionError
    is not raised), since reading a file we may read is not a reason to fail."""
    p = Path(path)
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077 == 0:
        return False
    try:
        os.chmod(p, mode & 0o700)
    except PermissionError:
        return False
    return True
