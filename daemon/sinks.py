"""Event sinks: where (topic, body) events go once the pipeline has built them.

The body schema is owned by the events module; sinks only serialise it (compact JSON, UTF-8 kept).
No sink may stall the pipeline: the ZeroMQ publisher never blocks and counts what it had to drop.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, Self, TextIO

import structlog
import zmq

from daemon.keys import ZMQ_ADDRESS, is_loopback, load_public, load_secret
from pipeline.private_files import check_output, open_fd

DEFAULT_ADDR = "tcp://127.0.0.1:5556"

log = structlog.get_logger(__name__)


def dumps(body: dict[str, Any]) -> str:
    """Compact JSON, keys in the order the producer built them, non-ASCII kept as is."""
    return json.dumps(body, sort_keys=False, ensure_ascii=False, separators=(",", ":"))


def encode(body: dict[str, Any]) -> bytes:
    return dumps(body).encode("utf-8")


def _check(topic: str, body: dict[str, Any]) -> None:
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"event topic must be a non-empty string, got {topic!r}")
    if not isinstance(body, dict):
        raise ValueError(f"event body must be a dict, got {type(body).__name__}")


def _check_addr(addr: str) -> None:
    if not isinstance(addr, str) or not ZMQ_ADDRESS.match(addr):
        raise ValueError(f"ZeroMQ address must look like tcp://HOST:PORT (or ipc://, inproc://), got {addr!r}")


class EventSink(Protocol):
    def send(self, topic: str, body: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


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
        _check(topic, body)
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


class JsonlSink:
    """Appends one JSON line per event (the body, with ``topic`` first when the body lacks it), flushed as
    it is written, so the file can be tailed and parsed line by line while the daemon runs.

    The file is mode 0600 (an existing looser one is tightened): events name people. ``close`` fsyncs.
    A torn last line left by a killed daemon is dropped before appending, so the log stays one JSON
    object per line. A symlink is refused, and one daemon at a time holds the file (an advisory lock):
    two daemons appending to one log interleave their events.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = check_output(path, "event log")
        self.path = p
        self._lock = threading.Lock()
        fd = open_fd(p, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
            if self._regular:  # a FIFO or device is written to as it is
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ValueError(f"event log {p} is in use by another facestream daemon: give each daemon "
                                     "its own file") from None
                _end_with_complete_line(fd, p)
        except BaseException:
            os.close(fd)
            raise
        self._file: TextIO | None = os.fdopen(fd, "a", encoding="utf-8")

    def send(self, topic: str, body: dict[str, Any]) -> None:
        _check(topic, body)
        line = dumps(body if body.get("topic") == topic else {"topic": topic, **body})
        with self._lock:
            if self._file is None:
                raise RuntimeError(f"event log {self.path} is closed")
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                if self._regular:  # a device or FIFO cannot be fsynced
                    os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end_with_complete_line(fd: int, path: Path) -> None:
    """Before appending: a last line without its newline is the tail of a write cut short (SIGKILL, power
    loss). Appending after it would glue two events into one corrupt line in the middle of the log."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start, chunk = size, 1 << 16
    while start > 0:  # find where the last line starts
        lo = max(0, start - chunk)
        nl = os.pread(fd, start - lo, lo).rfind(b"\n")
        if nl >= 0:
            start = lo + nl + 1
            break
        start = lo
    tail = os.pread(fd, size - start, start)
    try:
        complete = isinstance(json.loads(tail), dict)
    except ValueError:
        complete = False
    if complete:  # a whole event that only lacks its newline
        os.write(fd, b"\n")
    else:
        os.ftruncate(fd, start)
        log.warning("event_log_torn_line_dropped", path=str(path), bytes=size - start)


def read_log(path: str | os.PathLike[str], topics: tuple[str, ...] | list[str] = ()) -> Iterator[
        tuple[str, dict[str, Any]]]:
    """(topic, body) of each event in a JSON-lines event log whose topic starts with one of ``topics``.

    A last line that is cut short (no newline, not JSON: the daemon was killed mid-write) is skipped with
    a warning; any other line that is not a JSON event is a ValueError naming its line number."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"event log {p} does not exist")
    with p.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                body = json.loads(raw)
                why = "" if isinstance(body, dict) and isinstance(body.get("topic"), str) and body["topic"] else (
                    "no topic" if isinstance(body, dict) else f"a JSON {type(body).__name__}, not an object")
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                why = str(exc)
            if why and not raw.endswith(b"\n"):
                log.warning("event_log_torn_last_line_skipped", path=str(p), line=number, bytes=len(raw))
                return
            if why:
                raise ValueError(f"{p}:{number}: not a JSON event ({why})")
            if not topics or body["topic"].startswith(tuple(topics)):
                yield body["topic"], body


class StdoutSink:
    """One readable line per event: time, topic, source, then identity and score when present."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, topic: str, body: dict[str, Any]) -> None:
        _check(topic, body)
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
