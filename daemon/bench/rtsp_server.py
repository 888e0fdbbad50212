"""GStreamer's RTSP server as a child process (``rtsp_serve.py`` under the system Python, which has the GObject
bindings), serving files as cameras: for ``bench live`` and the RTSP tests."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"


def _server_script() -> Path:
    spec = importlib.util.find_spec("daemon.bench.rtsp_serve")
    if spec is None or spec.origin is None:
        raise RuntimeError("daemon/bench/rtsp_serve.py is missing from this installation")
    return Path(spec.origin)


class RtspServerProcess:
    """GStreamer's RTSP server (rtsp_serve.py under the system Python) on 127.0.0.1:``port``, serving
    ``mounts`` ({"/a": FILE}); started and ready on return. Also used by the RTSP tests."""

    def __init__(self, port: int, mounts: dict[str, Path]) -> None:
        if not Path(SYSTEM_PYTHON).exists():
            raise RuntimeError(f"{SYSTEM_PYTHON} not found: GStreamer's RTSP server runs under the system Python")
        self.port = port
        args = [SYSTEM_PYTHON, str(_server_script()), "--port", str(port)]
        for path, video in mounts.items():
            args += ["--mount", f"{path}={video}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "ready":
            self.close()
            err = (self.proc.stderr.read() if self.proc.stderr else "").strip().splitlines()
            raise RuntimeError("GStreamer's RTSP server did not start (apt install python3-gi "
                               "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad): "
                               + (err[-1] if err else line.strip()))

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
