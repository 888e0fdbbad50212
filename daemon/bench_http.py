"""``facestream bench http``: the pipeline's frames/s on a file with the web page open against without it.

"With" runs the daemon with its HTTP API on a free loopback port and, in this process, a client making
exactly the page's requests at the page's rates (daemon/web/app.js): a snapshot of every source each
second, the status every two seconds, the event stream open throughout, the recent events and the
gallery once; plus a Prometheus scrape every five seconds. A real browser would add its own rendering
to the two cores and measure the browser, not the daemon; the requests are what the daemon serves.
Runs alternate (without, with, without, ...) so drift in the machine hits both sides alike.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.bench_pipeline import pipeline_run
from daemon.config import Settings, with_overrides
from daemon.runner import Daemon

SNAPSHOT_S, STATUS_S, METRICS_S = 1.0, 2.0, 5.0  # the page's and a scraper's rates


class PagePoller:
    """The page's requests against ``base`` until stopped; counts what it got."""

    def __init__(self, base: str, sources: list[str]) -> None:
        self.base, self.sources = base, sources
        self.counts = {"snapshot": 0, "status": 0, "metrics": 0, "events": 0, "other": 0, "errors": 0}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, daemon=True),
                         threading.Thread(target=self._stream, daemon=True)]

    def _get(self, path: str, kind: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as r:
                body = r.read()
            self.counts[kind] += 1
            return body
        except OSError:
            self.counts["errors"] += 1
            return None

    def _poll(self) -> None:
        self._get("/v1/events/recent?limit=100", "other")
        self._get("/v1/identities", "other")
        self._get("/", "other")
        due = {"snapshot": 0.0, "status": 0.0, "metrics": 0.0}
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due["snapshot"]:
                due["snapshot"] = now + SNAPSHOT_S
                for sid in self.sources:
                    self._get(f"/v1/sources/{sid}/snapshot.jpg", "snapshot")
            if now >= due["status"]:
                due["status"] = now + STATUS_S
                self._get("/v1/status", "status")
            if now >= due["metrics"]:
                due["metrics"] = now + METRICS_S
                self._get("/metrics", "metrics")
            self._stop.wait(max(0.0, min(due.values()) - time.monotonic()))

    def _stream(self) -> None:
        try:
            with urllib.request.urlopen(self.base + "/v1/events", timeout=30) as r:
                for line in r:
                    if line.startswith(b"data: "):
                        self.counts["events"] += 1
                    if self._stop.is_set():
                        return
        except OSError:
            if not self._stop.is_set():
                self.counts["errors"] += 1

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._threads[0].join(5)
        return dict(self.counts)


def _with_page(daemon: Daemon) -> Callable[[], dict[str, int]]:
    assert daemon.http is not None
    poller = PagePoller(daemon.http.url, [s.id for s in daemon.specs])
    poller.start()
    return poller.stop


def run_bench_http(settings: Settings, gallery: Path | None, source: Path, repeats: int) -> dict[str, Any]:
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    served = with_overrides(settings, http={"listen": "127.0.0.1:0"})
    without, with_page, requests = [], [], []
    for _ in range(repeats):
        without.append(pipeline_run(settings, gallery, source)["fps"])
        r = pipeline_run(served, gallery, source, alongside=_with_page)
        with_page.append(r["fps"])
        requests.append(r["alongside"])
    a, b = statistics.median(without), statistics.median(with_page)
    return {"source": str(source), "repeats": repeats, "fps_without_page": [round(x, 2) for x in without],
            "fps_with_page": [round(x, 2) for x in with_page], "median_without": round(a, 2),
            "median_with": round(b, 2), "ratio_with_to_without": round(b / a, 4) if a else None,
            "page_requests_per_run": requests}
