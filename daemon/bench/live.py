"""``facestream bench live``: N RTSP streams of a file, served in real time by GStreamer's RTSP server on
127.0.0.1, read by the daemon as the cameras they pretend to be.

What a door or an NVR sees: frames arrive at the camera's rate whether or not the CPU keeps up. A live
source keeps only its newest frame, so falling behind shows up as frames dropped as stale and as
capture->event latency, never as a queue that grows. Reported per source: frames/s processed, frames
dropped as stale, latency p50/p99, the deepest queue, and whether the queues grew over the run.

The served file is prepared first with ffmpeg (looped to the run's length, at ``--fps`` and ``--size``
when given, H.264 with a keyframe a second), so the encoder never competes with the daemon for the CPU.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from daemon.bench.gpu_memory import gpu_memory_mb
from daemon.bench.rtsp_server import RtspServerProcess
from daemon.bench.soak import rss_halves, rss_mb
from daemon.config import Settings, with_overrides
from daemon.runner import Daemon


def prepare(source: Path, out: Path, seconds: float, fps: float | None, size: str | None) -> None:
    """An H.264 MP4 of ``source`` looped to ``seconds``, re-timed to ``fps`` and scaled to ``size``."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg not found: bench live prepares the served file with it (apt install ffmpeg)")
    vf = []
    if size:
        w, _, h = size.partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise ValueError(f"--size must look like 1280x720, got {size!r}")
        vf.append(f"scale={w}:{h}")
    if fps:
        vf.append(f"fps={fps:g}")
    gop = str(max(1, round(fps or 25)))
    cmd = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(source), "-t", f"{seconds:.1f}",
           *(["-vf", ",".join(vf)] if vf else []), "-an", "-c:v", "libx264", "-preset", "veryfast",
           "-pix_fmt", "yuv420p", "-g", gop, "-bf", "0", "-movflags", "+faststart", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ValueError(f"{source}: ffmpeg could not prepare it: {r.stderr.strip().splitlines()[-1:]}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def run_live(settings: Settings, gallery: Path | None, source: Path, streams: int, fps: float | None,
             seconds: float, size: str | None = None, warmup_s: float = 5.0, sample_s: float = 0.5) -> dict[str, Any]:
    """Serve ``source`` ``streams`` times over RTSP, run the daemon on the URLs for ``seconds`` after the last
    stream's first frame plus ``warmup_s``, and report per source (the warm-up is left out of every figure)."""
    if streams < 1:
        raise ValueError(f"--streams must be >= 1, got {streams}")
    if seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {seconds}")
    if fps is not None and fps <= 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    if not source.is_file():
        raise ValueError(f"video file not found: {source}")
    with tempfile.TemporaryDirectory(prefix="facestream-live-") as tmp:
        served = Path(tmp) / "served.mp4"
        t0 = time.perf_counter()
        # Long enough for connecting (~3 s a stream), the warm-up and the run, with room to spare.
        prepare(source, served, seconds + warmup_s + 10.0 + 3.0 * streams, fps, size)
        prepare_s = time.perf_counter() - t0
        port = _free_port()
        server = RtspServerProcess(port, {f"/s{i}": served for i in range(streams)})
        try:
            return measure(settings, gallery, [server.url(f"/s{i}") for i in range(streams)],
                            seconds, warmup_s, sample_s) | {"prepare_s": round(prepare_s, 1), "size": size,
                                                           "fps_served": fps, "source": str(source)}
        finally:
            server.close()


def measure(settings: Settings, gallery: Path | None, urls: list[str], seconds: float, warmup_s: float,
             sample_s: float, source_options: dict[str, Any] | None = None) -> dict[str, Any]:
    settings = with_overrides(settings, sinks={"zmq": None, "jsonl": None, "stdout": False, "timeline_csv": None,
                                               "annotate_dir": None})
    settings = settings.model_copy(update={"sources": urls})
    daemon = Daemon(settings, gallery, source_options)
    rc: dict[str, int] = {}
    runner = threading.Thread(target=lambda: rc.update(rc=daemon.run(install_signals=False)), daemon=True)
    runner.start()
    ids = [s.id for s in daemon.specs]

    def counts() -> dict[str, tuple[int, int, int]]:
        return {s.id: (s.frames_processed, s.frames_read, s.frames_dropped) for s in daemon.snapshot().sources}

    deadline = time.monotonic() + 60.0
    while not all(c[0] for c in counts().values()):
        if time.monotonic() > deadline or not runner.is_alive():
            daemon.request_stop()
            runner.join(30)
            raise RuntimeError(f"not every stream delivered a frame within 60 s: {counts()}")
        time.sleep(0.05)
    time.sleep(warmup_s)
    first = counts()
    start = {i: (*first[i], len(daemon.latency_samples(i))) for i in ids}
    t_start = time.monotonic()
    samples: list[dict[str, int]] = []
    rss: list[float] = []
    while time.monotonic() - t_start < seconds and runner.is_alive():
        time.sleep(sample_s)
        samples.append(daemon.snapshot().queues)
        rss.append(rss_mb())
    elapsed = time.monotonic() - t_start
    busy = daemon.snapshot().stage_busy
    last = counts()
    end = {i: (*last[i], daemon.latency_samples(i)) for i in ids}
    daemon.request_stop()
    runner.join(60)
    per_source = []
    for i in ids:
        done, read, dropped = (end[i][k] - start[i][k] for k in range(3))
        lat = end[i][3][start[i][3]:]
        per_source.append({"source": i, "fps_processed": round(done / elapsed, 2),
                           "fps_received": round(read / elapsed, 2), "frames_processed": done,
                           "frames_dropped_stale": dropped,
                           "latency_p50_ms": _pct(lat, 50), "latency_p99_ms": _pct(lat, 99)})
    third = max(1, len(samples) // 3)
    depth = [sum(q.values()) for q in samples] or [0]
    first, last = float(np.mean(depth[:third])), float(np.mean(depth[-third:]))
    queue_max = {name: max(q[name] for q in samples) for name in samples[0]} if samples else {}
    return {
        "streams": len(ids), "seconds": round(elapsed, 1), "warmup_s": warmup_s, "per_source": per_source,
        "stage_busy": busy, "queue_max": queue_max, "queue_depth_first_third": round(first, 2),
        "queue_depth_last_third": round(last, 2),
        # A queue that grew: deeper on average in the last third than in the first by more than one frame
        # per stream (bounded queues cannot grow without limit; a growing one means a stage fell behind).
        "queue_grew": last - first > len(ids),
        "latency_p99_ms": _pct([x for i in ids for x in end[i][3][start[i][3]:]], 99),
        **rss_halves(rss), "exit_code": rc.get("rc"), "engines": daemon.engines(), "gpu_memory_mb": gpu_memory_mb(),
    }
