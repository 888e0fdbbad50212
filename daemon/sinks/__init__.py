"""Event sinks: where (topic, body) events go once the pipeline has built them. One module per sink:
``zeromq`` (the PUB socket, and the subscriber ``facestream events`` uses, with ``keys`` for CURVE), ``jsonl``
(the event log), ``stdout``. Here: what every sink is, and the one JSON encoding they share.

The body schema is owned by the events module; sinks only serialise it (compact JSON, UTF-8 kept).
No sink may stall the pipeline: the ZeroMQ publisher never blocks and counts what it had to drop.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class EventSink(Protocol):
    def send(self, topic: str, body: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def dumps(body: dict[str, Any]) -> str:
    """Compact JSON, keys in the order the producer built them, non-ASCII kept as is."""
    return json.dumps(body, sort_keys=False, ensure_ascii=False, separators=(",", ":"))


def encode(body: dict[str, Any]) -> bytes:
    return dumps(body).encode("utf-8")


def check_event(topic: str, body: dict[str, Any]) -> None:
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"event topic must be a non-empty string, got {topic!r}")
    if not isinstance(body, dict):
        raise ValueError(f"event body must be a dict, got {type(body).__name__}")
