"""``facestream bench http``: the pipeline's frames/s with the web page open and polling against without it.

One daemon with its HTTP API plays the file over and over as fast as the pipeline takes it (every
frame processed). After a warm-up, the measurement alternates segments without and with the page's
requests; it reports the ratio of the mean frames/s with to without, and the mean of the per-pair
ratios with its 95 % confidence interval. Alternating inside one run matters here: two
separate runs of the same settings differ by up to 20 % on these 2 cores (how the threads of two
model pools land on them), far more than the effect measured.

"With" is a client in this process making exactly the page's requests at the page's rates
(daemon/web/app.js): a snapshot of every source each second, the status every two seconds, the event
stream open throughout, the recent events and the gallery once when it opens; plus a Prometheus
scrape every five seconds. A real browser would add its own rendering to the two cores and measure
the browser, not the daemon; the requests are what the daemon serves.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from daemon.config import Settings, with_overrides
from daemon.http.wiring import attach_http
from daemon.runner import Daemon

SNAPSHOT_S, STATUS_S, METRICS_S = 1.0, 2.0, 5.0  # the page's and a scraper's rates


class PagePoller:
    """The page's requests against ``base`` while ``active`` is set (the page open), none while it is clear
    (the page closed, its event stream too); counts what it got."""

    def __init__(self, base: str, sources: list[str]) -> None:
        self.base, self.sources = base, sources
        self.counts = {"snapshot": 0, "status": 0, "metrics": 0, "events": 0, "opened": 0, "errors": 0}
        self.active = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, daemon=True),
                         threading.Thread(target=self._stream, daemon=True)]

    def _get(self, path: str, kind: str | None) -> None:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as r:
                r.read()
            if kind:
                self.counts[kind] += 1
        except OSError:
            self.counts["errors"] += 1

    def _wait_active(self) -> bool:
        while not self._stop.is_set():
            if self.active.wait(0.05):
                return True
        return False

    def _poll(self) -> None:
        while self._wait_active():
            self.counts["opened"] += 1
            for path in ("/", "/app.js", "/app.css", "/v1/events/recent?limit=100", "/v1/identities"):
                self._get(path, None)
            due = {"snapshot": 0.0, "status": 0.0, "metrics": 0.0}
            while self.active.is_set() and not self._stop.is_set():
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
                self._stop.wait(max(0.0, min(min(due.values()) - time.monotonic(), 0.05)))

    def _stream(self) -> None:
        while self._wait_active():
            try:
                with urllib.request.urlopen(self.base + "/v1/events", timeout=2) as r:
                    for line in r:
                        if line.startswith(b"data: "):
                            self.counts["events"] += 1
                        if not self.active.is_set() or self._stop.is_set():
                            break
            except OSError:
                pass  # a quiet stream times out (it is reopened while the page is open) or the daemon stopped

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        return dict(self.counts)


def processed(daemon: Daemon) -> int:
    """Frames of the (one) source that went through every stage."""
    return daemon.snapshot().sources[0].frames_processed


def _source_state(url: str) -> str:
    """'state: detail' of the source, as the daemon's own status reports it."""
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/v1/status", timeout=5) as r:
            src = json.loads(r.read())["sources"][0]
        return f"{src['state']}: {src['detail'] or 'no status'}"
    except (OSError, ValueError, KeyError, IndexError):
        return "no status"


def run_bench_http(settings: Settings, gallery: Path | None, source: Path, segments: int, segment_s: float,
                   warmup: float) -> dict[str, Any]:
    """``segments`` pairs of (without, with) segments of ``segment_s`` each, after ``warmup``."""
    if segments < 1 or segment_s <= 0 or warmup < 0:
        raise ValueError(f"need --segments >= 1, --segment-seconds > 0 and --warmup >= 0, got {segments}, "
                         f"{segment_s} and {warmup}")
    settings = settings.model_copy(update={"sources": [str(source)], "sinks": settings.sinks.model_copy(
        update={"zmq": None, "jsonl": None, "stdout": False, "timeline_csv": None, "annotate_dir": None})})
    daemon = attach_http(Daemon(with_overrides(settings, http={"listen": "127.0.0.1:0"}), gallery,
                                source_options={"loop": True}))
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, daemon=True)
    t_start = time.perf_counter()
    runner.start()
    url = daemon.servers[0].url
    poller = PagePoller(url, [s.id for s in daemon.specs])
    poller.start()
    fps: dict[str, list[float]] = {"without": [], "with": []}
    try:
        time.sleep(warmup)
        while not processed(daemon):
            if not runner.is_alive() or daemon.snapshot().sources[0].failed or \
                    time.perf_counter() - t_start > warmup + 60:
                raise ValueError(f"{source}: no frame was processed ({_source_state(url)})")
            time.sleep(0.1)
        for _ in range(segments):
            for kind in ("without", "with"):
                if kind == "with":
                    poller.active.set()
                    time.sleep(0.5)  # the page's first requests land before the segment counts
                n0, t0 = processed(daemon), time.perf_counter()
                time.sleep(segment_s)
                fps[kind].append((processed(daemon) - n0) / (time.perf_counter() - t0))
                poller.active.clear()
    finally:
        counts = poller.stop()
        daemon.request_stop()
        runner.join(30)
    a, b = statistics.fmean(fps["without"]), statistics.fmean(fps["with"])
    pairs = [w / wo for wo, w in zip(fps["without"], fps["with"], strict=True) if wo > 0]
    return {"source": str(source), "segments": segments, "segment_s": segment_s, "warmup_s": warmup,
            "fps_without_page": [round(x, 2) for x in fps["without"]],
            "fps_with_page": [round(x, 2) for x in fps["with"]],
            "mean_without": round(a, 2), "mean_with": round(b, 2),
            "ratio_with_to_without": round(b / a, 4) if a else None,
            "paired_ratio_median": round(statistics.median(pairs), 4) if pairs else None,
            "paired_ratio_mean_ci95": _mean_ci(pairs), "page_requests": counts}


def _mean_ci(xs: list[float]) -> list[float] | None:
    """Mean and its 95 % confidence interval (Student's t) of the per-pair ratios: each pair of neighbouring
    segments shares the machine's state of the moment, so their ratio cancels the drift between runs."""
    if len(xs) < 2:
        return None
    from scipy.stats import t

    m, half = statistics.fmean(xs), t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return [round(m, 4), round(m - half, 4), round(m + half, 4)]
