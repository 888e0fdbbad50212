"""``bench live`` through GStreamer's real RTSP server on 127.0.0.1: per-source figures, bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import REPO
from rtsp_helpers import gstreamer_missing

CLI = [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))"]
PER_SOURCE = {"fps_processed", "fps_received", "frames_processed", "frames_dropped_stale", "latency_p50_ms",
              "latency_p99_ms"}


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"FACESTREAM_EMBEDDER__RUNTIME": "torch", "XDG_CACHE_HOME": str(tmp_path)}
    return subprocess.run([*CLI, "bench", "live", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_two_real_time_rtsp_streams_are_measured_per_source(tmp_path, data_dir) -> None:
    why = gstreamer_missing()
    if why:
        pytest.skip(why)
    clip = data_dir / "videos" / "known_identity" / "obama_speech.mp4"  # 15 frames/s
    out = _bench(tmp_path, "--streams", "2", "--source", str(clip), "--fps", "10", "--seconds", "3",
                 "--warmup", "1", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["streams"] == 2 and len(r["per_source"]) == 2
    assert len({p["source"] for p in r["per_source"]}) == 2
    for p in r["per_source"]:
        assert set(p) >= PER_SOURCE, PER_SOURCE - set(p)
        # Served re-timed to 10 frames/s and paced by the server: the daemon receives about that rate.
        assert 7.0 < p["fps_received"] < 13.0, p
        assert p["frames_processed"] > 0 and p["latency_p99_ms"] is not None
        assert p["frames_processed"] + p["frames_dropped_stale"] <= p["fps_received"] * r["seconds"] + 2
    assert r["exit_code"] == 0 and r["rss_first_half_mb"] > 100
    assert set(r["queue_max"]) == {"frames", "detected", "tracked", "embedded", "matched"}


@pytest.mark.parametrize(("args", "message"), [
    (["--streams", "0", "--source", "{clip}"], "--streams must be >= 1"),
    (["--source", "/nonexistent/clip.mp4"], "video file not found: /nonexistent/clip.mp4"),
    (["--fps", "-5", "--source", "{clip}"], "--fps must be > 0"),
    (["--size", "big", "--source", "{clip}"], "--size must look like 1280x720"),
])
def test_bad_arguments_fail_in_one_line(tmp_path, data_dir, args, message) -> None:
    clip = str(data_dir / "videos" / "known_identity" / "obama_speech.mp4")
    out = _bench(tmp_path, *[a.format(clip=clip) for a in args], "--seconds", "1")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
