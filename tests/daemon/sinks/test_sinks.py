from __future__ import annotations

import io
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from daemon.sinks import encode
from daemon.sinks.jsonl import JsonlSink
from daemon.sinks.stdout import StdoutSink, format_event
from daemon.sinks.zeromq import Subscriber, ZmqPublisher, subscribe

SYNC = "sync"


def _publisher(hwm: int = 1000) -> ZmqPublisher:
    pub = ZmqPublisher("tcp://127.0.0.1:*", hwm=hwm)
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", pub.endpoint)
    return pub


def _handshake(pub: ZmqPublisher, sub: Subscriber, timeout: float = 5.0) -> None:
    """Beat the slow joiner: publish sync events until one arrives, then drain the rest."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "subscriber never joined"
        pub.send(SYNC, {"sync": True})
        if sub.recv(timeout_s=0.02) is not None:
            break
    while sub.recv(timeout_s=0.1) is not None:
        pass


def _events(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [("face.identified", {"source": "cam0", "time": 1.7e9 + i, "identity": "Zoë", "score": 0.9, "seq": i})
            for i in range(n)]


def test_encode_is_compact_ordered_utf8() -> None:
    assert encode({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'.encode()


def test_subscriber_receives_exactly_the_events_sent() -> None:
    with _publisher() as pub, subscribe(pub.endpoint, timeout_s=1.0) as sub:
        _handshake(pub, sub)
        sent = _events(50)
        for topic, body in sent:
            assert pub.send(topic, body)
        got = [next(sub) for _ in sent]
        assert got == sent
        assert sub.recv(timeout_s=0.2) is None
        assert pub.dropped == 0 and pub.sent >= 51


def test_topic_filter_is_a_prefix_match() -> None:
    with _publisher() as pub, Subscriber(pub.endpoint, topics=[SYNC, "face.identified"], timeout_s=0.5) as sub:
        _handshake(pub, sub)
        for i in range(10):
            pub.send("face.identified", {"seq": i})
            pub.send("face.unknown", {"seq": i})
            pub.send("track.lost", {"seq": i})
        got = list(sub)  # ends after 0.5 s without an event
    assert got == [("face.identified", {"seq": i}) for i in range(10)]


def test_send_never_blocks_on_a_subscriber_that_does_not_read() -> None:
    ctx = zmq.Context.instance()
    pub = _publisher(hwm=10)
    stuck = ctx.socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 10)
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(pub.endpoint)
    try:
        sub = Subscriber(pub.endpoint, timeout_s=0.5)
        _handshake(pub, sub)  # both subscribers are connected now
        sub.close()
        body = {"source": "cam0", "pad": "x" * 4000}
        t0 = time.monotonic()
        for _ in range(5000):
            pub.send("face.identified", body)
        elapsed = time.monotonic() - t0
        alone = _publisher(hwm=10)  # the same sends with nobody connected: what "not blocked" costs
        t0 = time.monotonic()
        for _ in range(5000):
            alone.send("face.identified", body)
        baseline = time.monotonic() - t0
        alone.close(linger_ms=0)
        assert elapsed < 5 * baseline + 1.0, f"5000 sends took {elapsed:.2f} s, {baseline:.2f} s with no subscriber"
        # The stuck subscriber holds at most its HWM plus what the socket buffers took: PUB dropped the rest.
        received = 0
        while stuck.poll(200):
            stuck.recv_multipart()
            received += 1
        assert received < 5000
    finally:
        stuck.close()
        pub.close(linger_ms=0)


def test_publisher_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"^ZeroMQ address must look like tcp://HOST:PORT"):
        ZmqPublisher("localhost:5556")
    with pytest.raises(ValueError, match=r"^hwm must be >= 1, got 0$"):
        ZmqPublisher("tcp://127.0.0.1:*", hwm=0)
    with _publisher() as pub:
        with pytest.raises(ValueError, match=r"^cannot bind event publisher to "):
            ZmqPublisher(pub.endpoint)  # the port is taken
        with pytest.raises(ValueError, match=r"^event topic must be a non-empty string"):
            pub.send("", {})
    with pytest.raises(RuntimeError, match=r"^event publisher is closed$"):
        pub.send("face.identified", {})


def test_jsonl_sink_is_private_and_parses_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sent = _events(20)
    with JsonlSink(path) as sink:
        for topic, body in sent:
            sink.send(topic, body)
        assert len(path.read_text(encoding="utf-8").splitlines()) == 20  # flushed per event
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [(d.pop("topic"), d) for d in map(json.loads, lines)] == sent
    assert "Zoë" in lines[0]
    with JsonlSink(path) as sink:  # appends
        sink.send("track.lost", {"track": 3})
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[-1]) == {"topic": "track.lost", "track": 3}
    with pytest.raises(RuntimeError, match=r"is closed$"):
        sink.send("track.lost", {})


def test_jsonl_sink_needs_an_existing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=f"^event log: folder {re.escape(str(missing))} does not exist$"):
        JsonlSink(missing / "events.jsonl")
    with pytest.raises(ValueError, match=r"^event log: .* is a folder, not a file$"):
        JsonlSink(tmp_path)


def test_stdout_sink_prints_one_readable_line_per_event() -> None:
    out = io.StringIO()
    sink = StdoutSink(out)
    t = time.mktime((2025, 11, 24, 21, 30, 1, 0, 0, -1)) + 0.123
    sink.send("face.identified", {"source": "cam0", "time": t, "identity": "obama", "score": 0.91234})
    sink.send("face.unknown", {"source": "cam1", "time": t, "identity": None})
    assert out.getvalue().splitlines() == [
        "2025-11-24 21:30:01.123 face.identified source=cam0 identity=obama score=0.912",
        "2025-11-24 21:30:01.123 face.unknown source=cam1",
    ]
    assert format_event("x", {"time": "2025-11-24T21:30:01Z"}) == "2025-11-24T21:30:01Z x"
