"""``facestream bench soak``: N looped copies of a file read as live cameras at real-time rate, for a while.

What a door or attendance box does all day, compressed: it shows whether memory creeps up (CompreFace
users report gigabytes a day) and whether any queue or latency grows when the sources outpace the CPU
(they do on two cores: the live drop policy must keep only the newest frame per source).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from daemon.config import Settings
from daemon.runner import Daemon

log = structlog.get_logger(__name__)


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_halves(series: list[float]) -> dict[str, float | None]:
    """Mean RSS of the first and the second half of a run's samples, and the change between them."""
    if len(series) < 2:
        return {"rss_first_half_mb": None, "rss_second_half_mb": None, "rss_half_change_pct": None}
    half = len(series) // 2
    first, second = sum(series[:half]) / half, sum(series[half:]) / (len(series) - half)
    return {"rss_first_half_mb": round(first, 1), "rss_second_half_mb": round(second, 1),
            "rss_half_change_pct": round(100.0 * (second - first) / first, 2)}


def run_soak(settings: Settings, gallery: Path | None, source: Path, streams: int, seconds: float,
             warmup_s: float, sample_s: float = 1.0) -> dict[str, Any]:
    """Run the daemon on ``streams`` looped copies of ``source`` for ``seconds``; RSS and queue figures.

    RSS growth is measured from the end of ``warmup_s`` (models loaded, allocator pools filled) to the
    end, on the median of the last few samples of each so one transient allocation does not decide it."""
    if streams < 1:
        raise ValueError(f"--streams must be >= 1, got {streams}")
    if not 0 <= warmup_s < seconds:
        raise ValueError(f"need 0 <= --warmup < --seconds, got {warmup_s} and {seconds}")
    if not source.is_file():
        raise ValueError(f"video file not found: {source}")
    settings = settings.model_copy(update={"sources": [str(source)] * streams})
    daemon = Daemon(settings, gallery, source_options={"live": True, "realtime": True, "loop": True})
    result: dict[str, int] = {}
    runner = threading.Thread(target=lambda: result.update(rc=daemon.run(install_signals=False)), daemon=True)
    t0 = time.monotonic()
    runner.start()
    samples: list[tuple[float, float, dict[str, int]]] = []
    while time.monotonic() - t0 < seconds and runner.is_alive():
        time.sleep(sample_s)
        samples.append((time.monotonic() - t0, rss_mb(), daemon.snapshot().queues))
    snap = daemon.snapshot()
    stats = snap.as_event()
    daemon.request_stop()
    runner.join(60)
    if not samples:
        raise RuntimeError("the daemon stopped before the first sample")

    def median_rss(window: list[tuple[float, float, dict[str, int]]]) -> float:
        values = sorted(r for _, r, _ in window[-5:])
        return values[len(values) // 2]

    warm = [s for s in samples if s[0] <= warmup_s] or samples[:1]
    start, end = median_rss(warm), median_rss(samples)
    queue_max = {name: max(q[name] for _, _, q in samples) for name in samples[0][2]}
    late = samples[len(samples) // 2:]
    return {
        "streams": streams, "seconds": round(samples[-1][0], 1), "warmup_s": warmup_s,
        "rss_after_warmup_mb": round(start, 1), "rss_end_mb": round(end, 1),
        "rss_max_mb": round(max(r for _, r, _ in samples), 1),
        "rss_growth_pct": round(100.0 * (end - start) / start, 2),
        **rss_halves([r for _, r, _ in samples]),
        "rss_series_mb": [[round(t), round(r)] for t, r, _ in samples[:: max(1, len(samples) // 12)]],
        "queue_max": queue_max,
        "queue_max_second_half": {name: max(q[name] for _, _, q in late) for name in queue_max},
        "frames_read": stats["frames_read"], "frames_dropped": stats["frames_dropped"],
        "frames_detected": stats["frames_detected"], "faces_embedded": stats["faces_embedded"],
        "latency": snap.latency, "exit_code": result.get("rc"),
    }
