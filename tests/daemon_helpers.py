"""Running the daemon in process on a real clip, for the event tests."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from daemon.config import load_settings
from daemon.profiles import build_daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_daemon(tmp_path: Path, video: Path, gallery: Path, name: str, zmq: str | None = None) -> list[dict]:
    """The daemon at its default settings on ``video`` to the end; the events of its JSONL."""
    out = tmp_path / f"{name}.jsonl"
    settings = load_settings(None, sources=[str(video)], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(out), "zmq": zmq, "timeline_csv": str(tmp_path / f"{name}.csv"),
                                    "zmq_wait_subscriber_s": 10.0 if zmq else 0.0})
    assert build_daemon(settings, gallery)[0].run(install_signals=False) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


class ZmqCollector:
    """Collects every event a subscriber at ``addr`` receives, in a thread, until ``done()`` has been called and
    half a second has passed without a message (no fixed silence to wait out after the daemon has exited)."""

    def __init__(self, addr: str) -> None:
        import threading

        from daemon.sinks.zeromq import subscribe

        self.events: list[dict] = []
        self._sub = subscribe(addr, ())
        self._exited = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while (event := self._sub.recv(0.5)) is not None or not self._exited.is_set():
            if event is not None:
                self.events.append(event[1])

    def done(self, timeout_s: float = 30.0) -> list[dict]:
        """The daemon has exited: the events received, once the last in flight have arrived."""
        self._exited.set()
        self._thread.join(timeout_s)
        self._sub.close()
        return self.events
