"""``bench pipeline`` on a real clip: every key, the daemon read every frame, decoding alone is faster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cli_helpers import REPO

KEYS = {"decode_fps", "pipeline_fps", "baseline_fps", "speedup_vs_baseline", "fraction_of_decode",
        "faces_embedded_per_s", "startup_s", "peak_rss_mb", "latency_p50_ms", "latency_p99_ms"}


def test_bench_pipeline_reports_every_figure(tmp_path, data_dir) -> None:
    clip = data_dir / "videos" / "known_identity" / "obama_speech.mp4"
    cmd = [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))",
           "bench", "pipeline", "--source", str(clip), "--baseline", "--baseline-frames", "3", "--json"]
    env = {"FACESTREAM_EMBEDDER__RUNTIME": "torch", "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(r) >= KEYS, KEYS - set(r)
    assert r["frames"] == 60 and r["baseline_frames"] == 3
    assert r["decode_fps"] > 0 and r["pipeline_fps"] > 0 and r["baseline_fps"] > 0  # speeds are benchmarks, not tests
    assert abs(r["fraction_of_decode"] - r["pipeline_fps"] / r["decode_fps"]) < 1e-3
    assert r["faces_embedded_per_s"] > 0 and r["peak_rss_mb"] > 100


def test_bench_pipeline_runs_the_door_with_liveness_and_reports_its_cost(data_dir, stills_gallery,
                                                                         one_torch_thread) -> None:
    from daemon.bench.pipeline import run_bench
    from daemon.config import load_settings

    clip = data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"
    settings = load_settings(None, embedder={"runtime": "torch"})  # liveness weights: the shared copy (conftest)
    r = run_bench(settings, stills_gallery, clip, False, None, liveness="on")
    assert r["door"] is True and r["liveness"] == "on" and r["frames"] == 275
    # Miranda's track and the others are scored until the door decides them: a few faces, each timed.
    assert r["liveness_faces_scored"] >= 3 and r["liveness_ms_per_face"] > 0
