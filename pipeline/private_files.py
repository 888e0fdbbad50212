"""Files that name people or hold keys (galleries, event logs, exports, reports, key files): mode 0600,
written only where the setting points, never through a symlink.

``os.open(..., 0o600)`` only sets the mode of a file it creates, so a file that already exists with a
looser mode (0644 from an older version, ``cp``, or a umask) is tightened as it is opened for writing.
Two things are never done: following a symlink at the last component (``O_NOFOLLOW``: a link planted at
``events.jsonl`` must not make us append to, truncate or chmod what it points at) and changing the mode of
anything but a regular file (``--events-jsonl /dev/null`` run as root must not make /dev/null 0600 for
everyone).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO, Any

PRIVATE_MODE = 0o600

_FLAGS = {
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
}


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def check_output(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a file we may write: its folder exists, and it is not a folder or a symlink. Call it for
    every output before writing any, so a bad setting leaves every file as it was."""
    p = Path(path).expanduser()
    if p.is_symlink():
        raise ValueError(f"{what}: {_clip(str(p))} is a symlink; refusing to write through it (point the setting "
                         "at the file itself)")
    if p.is_dir():
        raise ValueError(f"{what}: {_clip(str(p))} is a folder, not a file")
    if not p.parent.is_dir():
        raise ValueError(f"{what}: folder {_clip(str(p.parent))} does not exist")
    return p


def open_fd(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open`` with ``O_NOFOLLOW | O_CLOEXEC`` and mode 0600 for a new file; a regular file is tightened to
    0600, anything else (a device, a FIFO) is written to as it is. A symlink is a one-line ValueError."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{_clip(os.fspath(path))} is a symlink; refusing to write through it (point the "
                             "setting at the file itself)") from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 != PRIVATE_MODE:
            os.fchmod(fd, PRIVATE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for writing ("w", "a", "wb", "ab"), the file created or tightened to 0600."""
    if mode.rstrip("b") not in _FLAGS or mode.count("b") > 1:
        raise ValueError(f"open_private mode must be 'w', 'a', 'wb' or 'ab', got {mode!r}")
    fd = open_fd(path, _FLAGS[mode.rstrip("b")])
    try:
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def is_regular(path: str | os.PathLike[str]) -> bool:
    """True for a regular file itself (not a symlink to one, not a device)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def tighten(path: str | os.PathLike[str]) -> bool:
    """Make an existing regular file 0600 when group or others may access it; True when the mode changed.

    A symlink or anything but a regular file is left alone. A file owned by someone else cannot be changed
    by us; that is left to its owner (PermissionError is not raised), since reading a file we may read is not
    a reason to fail."""
    p = Path(path)
    st = os.lstat(p)
    if not stat.S_ISREG(st.st_mode):
        return False
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 == 0:
        return False
    try:
        os.chmod(p, mode & 0o700)
    except PermissionError:
        return False
    return True
