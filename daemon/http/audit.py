"""The API audit log: one JSON line per gallery change asked for through the HTTP API.

Who enrolled whose face, from where, and whether it went through is what an operator needs after the fact
(a face enrolled from a browser on the door host is the attack this log makes visible). A line holds the
time, the remote address, the method and route, the identity named, the HTTP status and the outcome; never
a photo's bytes. The file is 0600 and each line is flushed as written.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.stores.audit import open_audit


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "..."


class ApiAudit:
    def __init__(self, path: str | os.PathLike[str], spool_dir: Path | None = None, *,
                 rotate_daily: bool = False) -> None:
        self.store = open_audit(path, "http.audit_log", spool_dir, rotate_daily=rotate_daily)

    @property
    def lines(self) -> int:
        return self.store.lines

    def write(self, scope: MutableMapping[str, Any], action: str, identity: str, status: int,
              reason: str | None = None, detail: dict[str, Any] | None = None) -> None:
        client = scope.get("client") or ("?", 0)
        outcome = "ok" if 200 <= status < 300 else ("failed" if status >= 500 else "refused")
        line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "remote": client[0], "method": scope.get("method"), "route": _clip(scope.get("path", ""), 200),
                "action": action, "identity": _clip(identity, 100), "status": status, "outcome": outcome,
                **({"reason": _clip(reason, 300)} if reason else {}), **(detail or {})}
        self.store.write(line)

    def close(self) -> None:
        self.store.close()
