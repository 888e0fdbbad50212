"""A real RTSP server for tests: GStreamer's, run by the system Python (daemon/bench/rtsp_serve.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from daemon.bench.rtsp_server import RtspServerProcess

SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gstreamer_missing() -> str | None:
    """Why GStreamer's RTSP server cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(n) for n in ('qtdemux', 'h264parse', 'rtph264pay'))")
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else ("GStreamer RTSP server packages missing (python3-gi gir1.2-gst-rtsp-server"
                                           "-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad): "
                                           + r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "")


class RtspServer(RtspServerProcess):
    """``with RtspServer(port, {"/a": video}) as s``; ``s.url("/a")``; ``kill()``, ``pause()``, ``resume()``."""

    def __init__(self, port: int, mounts: dict[str, Path]) -> None:
        why = gstreamer_missing()
        if why:
            pytest.skip(why)
        super().__init__(port, mounts)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused server must run to die cleanly
        self.close()

    def pause(self) -> None:
        """Connected but silent: the process is frozen, its sockets stay open."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_for(pred, timeout: float, tick: float = 0.05) -> float | None:
    """Seconds until ``pred()`` held, or None after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(tick)
    return None
