"""Events to HTTP clients: a sink that keeps the recent events and fans each one out to Server-Sent
Events streams.

Like the ZeroMQ publisher it never blocks the pipeline: each stream has a bounded queue on the
server's event loop, and a client too slow to keep up loses its oldest events (counted) instead of
holding the events stage back. Every event gets a sequence number, sent as the SSE ``id``, so a
client that reconnects with ``Last-Event-ID`` gets what it missed from the recent ones.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from daemon.sinks import dumps

_END = None  # put on a stream's queue when the hub closes


class EventHub:
    def __init__(self, keep: int = 200, stream_queue: int = 256) -> None:
        self._lock = threading.Lock()
        self._recent: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=keep)
        self._seq = itertools.count(1)
        self._streams: set[asyncio.Queue[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stream_queue = stream_queue
        self.dropped = 0  # events a slow stream lost
        self.closed = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The HTTP server's event loop, where the streams' queues live."""
        self._loop = loop

    # ---- sink side (pipeline threads) ------------------------------------------------------------
    def send(self, topic: str, body: dict[str, Any]) -> None:
        with self._lock:
            item = (next(self._seq), topic, body)
            self._recent.append(item)
            loop = self._loop if self._streams else None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fan_out, item)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fan_out, _END)

    # ---- HTTP side (the server's event loop) -----------------------------------------------------
    def _fan_out(self, item: Any) -> None:
        for q in list(self._streams):
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(item)

    def recent(self, topics: tuple[str, ...] = (), after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = [(s, t, b) for s, t, b in self._recent if s > after and (not topics or t.startswith(topics))]
        if limit is not None:
            items = items[-limit:]
        return [{"seq": s, **b} for s, _, b in items]

    def event(self, seq: int) -> tuple[str, dict[str, Any]] | None:
        """(topic, body) of the recent event ``seq``; None once it has left the recent ones (or never was)."""
        with self._lock:
            return next(((t, b) for s, t, b in self._recent if s == seq), None)

    async def stream(self, topics: tuple[str, ...], last_id: int | None) -> AsyncIterator[str]:
        """SSE text: first the recent events after ``last_id`` (none for a new client), then each new one; a
        comment every 15 s keeps proxies from closing an idle stream."""
        q: asyncio.Queue[Any] = asyncio.Queue(self.stream_queue)
        with self._lock:
            self._streams.add(q)
            backlog = list(self._recent) if last_id is not None else []
            closed = self.closed
        try:
            sent = last_id or 0
            for seq, topic, body in backlog:
                if seq > sent and (not topics or topic.startswith(topics)):
                    sent = seq
                    yield _sse(seq, topic, body)
            yield ": connected\n\n"
            while not closed:
                try:
                    item = await asyncio.wait_for(q.get(), 15.0)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is _END:
                    return
                seq, topic, body = item
                if seq > sent and (not topics or topic.startswith(topics)):
                    sent = seq
                    yield _sse(seq, topic, body)
        finally:
            with self._lock:
                self._streams.discard(q)


def _sse(seq: int, topic: str, body: dict[str, Any]) -> str:
    return f"id: {seq}\nevent: {topic}\ndata: {dumps(body)}\n\n"
