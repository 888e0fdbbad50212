"""A real daemon serving HTTP on 127.0.0.1 in a subprocess, an SSE reader, and headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from daemon_helpers import free_port

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))"]


class Served:
    """``facestream ARGS --http 127.0.0.1:PORT`` until :meth:`stop`; ``get``/``post``/... send the token."""

    def __init__(self, args: list[str], log: Path, token: str | None = None, env: dict[str, str] | None = None,
                 ready_s: float = 120.0) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = token
        full = {**os.environ, "FACESTREAM_EMBEDDER__RUNTIME": "torch", **(env or {})}
        if token:
            full["FACESTREAM_HTTP__TOKEN"] = token
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen([*CLI, *args, "--http", f"127.0.0.1:{self.port}"], cwd=REPO, env=full,
                                     stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if self.get("/v1/status", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"daemon not serving after {ready_s} s: {log.read_text()[-2000:]}")

    @property
    def headers(self) -> dict[str, str]:
        """What the page sends: the token when there is one, and the header that marks a request as the API
        client's own (state-changing requests without it are refused as possibly cross-site)."""
        return {"X-Facestream-Request": "1", **({"Authorization": f"Bearer {self.token}"} if self.token else {})}

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return requests.request(method, self.base + path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def stop(self, timeout_s: float = 10.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode, time.monotonic() - t0


class SseReader:
    """Reads ``GET /v1/events`` on a thread into ``events`` (each body with its SSE ``id`` as ``seq``)."""

    def __init__(self, served: Served, query: str = "", last_id: int | None = None) -> None:
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": str(last_id)} if last_id is not None else {})}
        self.response = served.get("/v1/events" + query, stream=True, headers=headers, timeout=(5, 60))
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self.events: list[dict] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        seq = None
        with contextlib.suppress(requests.RequestException, AttributeError, ValueError):
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith("id: "):
                    seq = int(line[4:])
                elif line.startswith("data: "):
                    self.events.append({**json.loads(line[6:]), "seq": seq})

    def wait_for(self, pred, timeout_s: float, start: int = 0) -> dict | None:
        """The first event from index ``start`` on that ``pred`` accepts, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        seen = start
        while time.monotonic() < deadline:
            for e in self.events[seen:]:
                if pred(e):
                    return e
                seen += 1
            time.sleep(0.1)
        return None

    def close(self) -> None:
        self.response.close()


def chromium_missing() -> str | None:
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"{exe} not installed (Debian packages chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install selenium)"
    return None


@contextlib.contextmanager
def chromium(width: int = 1200, height: int = 1400) -> Iterator:
    """Headless Chromium (Debian's) through its chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
