"""``bench analyze VIDEO... --copies K``: ``analyze`` of the same videos in one process, on a local pool of 1
and of 2 workers and on ``--ray local``, one after another in one run; wall times and their ratios to the
one-process run (the figures of docs/profiles.md, "Several processes or machines")."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon.config import Settings

MODES = ("one-process", "workers-1", "workers-2", "ray-local")


def run_bench_analyze(settings: Settings, gallery: Path | str | None, videos: list[Path], copies: int,
                      modes: list[str]) -> dict[str, Any]:
    from daemon.profiles.analyze import media_frames, run_analyze
    from daemon.profiles.analyze_driver import run_jobs

    work = Path(tempfile.mkdtemp(prefix="facestream-bench-analyze-"))
    try:
        clips = []
        for k in range(copies):  # the same files under other names: K times the archive
            for v in videos:
                link = work / "clips" / f"c{k}_{v.name}"
                link.parent.mkdir(exist_ok=True)
                link.symlink_to(v.resolve())
                clips.append(link)
        seconds = sum(f / fps for f, fps in map(media_frames, clips) if fps > 0)
        runs: dict[str, Any] = {}
        for mode in modes:
            out = work / mode
            t = time.monotonic()
            if mode == "one-process":
                r = run_analyze(settings, gallery, clips, out)
            elif mode.startswith("workers-"):
                r = run_jobs(settings, gallery, clips, out, int(mode.split("-")[1]))
            else:
                r = run_jobs(settings, gallery, clips, out, 1, "local")
            wall = time.monotonic() - t
            runs[mode] = {"wall_s": round(wall, 1), "media_s_per_s": round(seconds / wall, 2),
                          "exit_code": r["exit_code"], "index_rows": r["index_rows"]}
        base = runs.get("one-process", {}).get("wall_s")
        for r in runs.values():
            r["speedup_vs_one_process"] = round(base / r["wall_s"], 2) if base else None
        return {"videos": len(clips), "media_s": round(seconds, 1), "runs": runs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
