"""``[paths]``: the state directory, where the files a daemon keeps (event log, door audit, attendance book,
API audit) go when the configuration names them by a relative path.

Relative to the state directory, not to the folder the daemon was started in: the door profile's
``audit = "door-audit.jsonl"`` must not drop biometric records into whatever folder a user stands in (a
repository checkout included). Paths given on the command line (``--events-jsonl x.jsonl``) keep their
usual meaning, relative to the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


def default_state_dir() -> Path:
    """systemd's ``StateDirectory=`` when it set one, ``/var/lib/facestream`` under another systemd unit, else
    ``$XDG_STATE_HOME/facestream`` (``~/.local/state/facestream``)."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.environ.get("INVOCATION_ID"):
        return Path("/var/lib/facestream")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "facestream"


class PathsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(default_factory=default_state_dir, description="Folder (0700, created on first use) "
                            "for state files named by relative paths in the configuration: sinks.jsonl, "
                            "door.audit, attendance.db, http.audit_log.")

    def resolve(self, path: Path | str | None) -> Path | str | None:
        """``path`` as the daemon will use it: ``~`` expanded, a relative path put under the state directory;
        a database URL as it is."""
        if path is None or isinstance(path, str):
            return path
        path = path.expanduser()
        return path if path.is_absolute() else self.state_dir.expanduser() / path
