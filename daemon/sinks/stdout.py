"""One readable line per event on stdout (``--stdout``), and the line format ``facestream events`` prints."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime
from typing import Any, TextIO

from daemon.sinks import check_event


class StdoutSink:
    """One readable line per event: time, topic, source, then identity and score when present."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, topic: str, body: dict[str, Any]) -> None:
        check_event(topic, body)
        with self._lock:
            stream = self._stream or sys.stdout
            stream.write(format_event(topic, body) + "\n")
            stream.flush()

    def close(self) -> None:
        pass


def format_event(topic: str, body: dict[str, Any]) -> str:
    """``2025-11-24 21:30:01.123 face.identified source=cam0 identity=obama score=0.912``."""
    t = body.get("time")
    if isinstance(t, int | float) and not isinstance(t, bool):
        stamp = datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    elif isinstance(t, str):
        stamp = t
    else:
        stamp = datetime.fromtimestamp(time.time()).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    parts = [stamp, topic]
    if "source" in body:
        parts.append(f"source={body['source']}")
    if body.get("identity") is not None:
        parts.append(f"identity={body['identity']}")
    score = body.get("score")
    if isinstance(score, int | float) and not isinstance(score, bool):
        parts.append(f"score={score:.3f}")
    return " ".join(parts)
