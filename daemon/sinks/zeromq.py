"""The ZeroMQ sink (an XPUB socket, optionally CURVE-encrypted) and the subscriber ``facestream events`` uses."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Self

import structlog
import zmq

from daemon.sinks import check_event, encode
from daemon.sinks.keys import ZMQ_ADDRESS, is_loopback, load_public, load_secret

DEFAULT_ADDR = "tcp://127.0.0.1:5556"

log = structlog.get_logger(__name__)


def _check_addr(addr: str) -> None:
    if not isinstance(addr, str) or not ZMQ_ADDRESS.match(addr):
        raise ValueError(f"ZeroMQ address must look like tcp://HOST:PORT (or ipc://, inproc://), got {addr!r}")


class ZmqPublisher:
    """A PUB socket bound to ``addr``; each event is a two-part message [topic, JSON body].

    ``send`` never blocks. PUB drops messages for a subscriber whose queue is at ``hwm`` silently
    (by design, so one stuck subscriber cannot starve the others); ``dropped`` counts the drops
    ZeroMQ does report (EAGAIN), so it is a lower bound. Bind to port ``*`` for a free port and
    read the real one from ``endpoint``.

    With ``secret_key`` (a ``server.key_secret`` file) the socket is a CURVE server: events are
    encrypted and only subscribers that know the server's public key get them. Without one it binds
    loopback addresses only, unless ``insecure`` (then it logs a warning): events name people.
    """

    def __init__(self, addr: str = DEFAULT_ADDR, hwm: int = 1000, context: zmq.Context | None = None,
                 secret_key: str | os.PathLike[str] | None = None, insecure: bool = False) -> None:
        _check_addr(addr)
        if hwm < 1:
            raise ValueError(f"hwm must be >= 1, got {hwm}")
        keys = load_secret(Path(secret_key), "sinks.zmq_secret_key") if secret_key is not None else None
        if keys is None and not insecure and not is_loopback(addr):
            raise ValueError(f"sinks.zmq: {addr} is not a loopback address; publishing there needs CURVE keys "
                             "(sinks.zmq_secret_key) or sinks.insecure = true")
        self.curve = keys is not None
        self.sent = 0
        self.dropped = 0
        self._lock = threading.Lock()  # ZeroMQ sockets are not thread-safe
        # A CURVE server gets a context of its own: one ZAP authenticator serves a whole context.
        self._own_context = zmq.Context() if self.curve and context is None else None
        ctx = context or self._own_context or zmq.Context.instance()
        self._auth: Any = None
        # XPUB behaves as PUB for sending and also tells us when a subscriber joins.
        self._sock: zmq.Socket | None = ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 1000)
        try:
            if keys is not None:
                from zmq.auth import CURVE_ALLOW_ANY
                from zmq.auth.thread import ThreadAuthenticator

                self._auth = ThreadAuthenticator(ctx)
                self._auth.start()
                # Any client completing the handshake knows the server's public key: that is the secret shared.
                self._auth.configure_curve(domain="*", location=CURVE_ALLOW_ANY)
                self._sock.curve_publickey, self._sock.curve_secretkey = keys
                self._sock.curve_server = True
            self._sock.bind(addr)
        except zmq.ZMQError as e:
            self._teardown(0)
            raise ValueError(f"cannot bind event publisher to {addr}: {e}") from e
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if insecure and not self.curve:
            log.warning("zmq_insecure", addr=self.endpoint, loopback=is_loopback(addr),
                        detail="sinks.insecure = true: events are published unencrypted to anyone who connects")

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until a subscriber has subscribed (so a file analysis loses no
        event to ZeroMQ's slow-joiner gap); True when one did."""
        with self._lock:
            if self._sock is None:
                raise RuntimeError("event publisher is closed")
            if self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
                while self._sock.poll(0, zmq.POLLIN):
                    self._sock.recv(zmq.NOBLOCK)
                return True
            return False

    def send(self, topic: str, body: dict[str, Any]) -> bool:
        """Queue one event; False when ZeroMQ refused it (counted in ``dropped``)."""
        check_event(topic, body)
        data = encode(body)
        with self._lock:
            if self._sock is None:
                raise RuntimeError("event publisher is closed")
            try:
                self._sock.send_multipart([topic.encode("utf-8"), data], flags=zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1
                return False
            self.sent += 1
            return True

    def close(self, linger_ms: int = 1000) -> None:
        """Close the socket, giving queued events up to ``linger_ms`` to leave."""
        with self._lock:
            self._teardown(linger_ms)

    def _teardown(self, linger_ms: int) -> None:
        if self._sock is not None:
            self._sock.close(linger=linger_ms)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context is not None:
            self._own_context.term()  # waits for the linger of the closed socket
            self._own_context = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber:
    """A SUB socket connected to a publisher; iterate it for (topic, body) events.

    ``timeout_s`` bounds each wait: iteration ends after that long without an event (None: wait
    forever). Messages that are not [topic, JSON object] are skipped and logged. ``server_key`` (the
    publisher's public key file) makes it a CURVE client with a key pair of its own made for this run.
    """

    def __init__(self, addr: str = DEFAULT_ADDR, topics: tuple[str, ...] | list[str] = (),
                 timeout_s: float | None = None, context: zmq.Context | None = None,
                 server_key: str | os.PathLike[str] | None = None) -> None:
        _check_addr(addr)
        if timeout_s is not None and timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        if isinstance(topics, str):
            raise ValueError(f"topics must be a list of topic prefixes, got the string {topics!r}")
        server_public = load_public(Path(server_key), "--server-key") if server_key is not None else None
        self.timeout_s = timeout_s
        self._sock: zmq.Socket | None = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        if server_public is not None:
            self._sock.curve_serverkey = server_public
            self._sock.curve_publickey, self._sock.curve_secretkey = zmq.curve_keypair()
        for t in topics or ("",):  # a prefix match; "" is every topic
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode("utf-8"))
        try:
            self._sock.connect(addr)
        except zmq.ZMQError as e:
            self._sock.close()
            raise ValueError(f"cannot connect to event publisher at {addr}: {e}") from e
        self._ended = False

    def recv(self, timeout_s: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """The next event, or None after ``timeout_s`` seconds without one (None: wait forever)."""
        if self._sock is None:
            raise RuntimeError("subscriber is closed")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sock.poll(None if left is None else int(left * 1000)):
                return None
            parts = self._sock.recv_multipart()
            event = _decode(parts)
            if event is not None:
                return event
            log.warning("event_malformed", parts=len(parts))

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> tuple[str, dict[str, Any]]:
        event = None if self._ended else self.recv(self.timeout_s)
        if event is None:
            self._ended = True
            raise StopIteration
        return event

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(parts: list[bytes]) -> tuple[str, dict[str, Any]] | None:
    if len(parts) != 2:
        return None
    try:
        topic = parts[0].decode("utf-8")
        body = json.loads(parts[1])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return (topic, body) if isinstance(body, dict) else None


def subscribe(addr: str = DEFAULT_ADDR, topics: tuple[str, ...] | list[str] = (),
              timeout_s: float | None = None, server_key: str | os.PathLike[str] | None = None) -> Subscriber:
    """Connect to a publisher (``facestream events``); the result iterates (topic, body) pairs."""
    return Subscriber(addr, topics, timeout_s, server_key=server_key)
