"""``facestream bench pipeline``: the daemon's throughput on a file against the decode floor and the
seed-style loop, in one process, so the three figures are comparable.

- decode: the same FFmpeg backend reading every frame, nothing else (the ceiling);
- pipeline: the daemon at the given settings (file source, no sinks), timed from its first frame;
- ``--liveness on|off``: the pipeline as a door runs it (door profile, audit in a temporary folder), with or
  without liveness, and the per-face cost of the liveness scoring inside that run;
- baseline (``--baseline``): what the "FaceNet + SVM" notebooks do: facenet-pytorch's own MTCNN on every
  frame at full resolution, then one embedding per face, no batching, skipping or tracking.
Model loading is reported separately (``startup_s``), never inside a frames/s figure.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from daemon.bench.gpu_memory import gpu_memory_mb
from daemon.config import Settings, with_overrides
from daemon.profiles import build_daemon


def _bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total or None, desc=desc, unit="frame", disable=not sys.stderr.isatty(), leave=False)


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return int(n) if n and n > 0 else 0
    finally:
        cap.release()


def decode_fps(path: Path) -> tuple[float, int]:
    """Frames/s of reading (decoding) every frame with the daemon's backend, and the frame count."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise ValueError(f"{path}: not a video, or a format FFmpeg cannot open")
    n, t0 = 0, time.perf_counter()
    with _bar(_frame_count(path), "decode") as bar:
        while True:
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
            bar.update()
    elapsed = time.perf_counter() - t0
    cap.release()
    if n == 0:
        raise ValueError(f"{path}: no decodable frame")
    return n / elapsed, n


def pipeline_run(settings: Settings, gallery: Path | str | None, path: Path) -> dict[str, Any]:
    """The daemon on one file: frames/s from its first frame to its last event, start-up apart."""
    settings = settings.model_copy(update={"sources": [str(path)]})
    settings = settings.model_copy(update={"sinks": settings.sinks.model_copy(
        update={"zmq": None, "jsonl": None, "stdout": False, "timeline_csv": None, "annotate_dir": None})})
    t0 = time.perf_counter()
    daemon, parts = build_daemon(settings, gallery)  # with the profiles and [[actions]] the config asks for
    sid = daemon.specs[0].id
    startup = time.perf_counter() - t0
    rc: dict[str, int] = {}
    runner = threading.Thread(target=lambda: rc.update(rc=daemon.run(install_signals=False)), daemon=True)
    t1 = time.perf_counter()
    runner.start()
    done, t_done = 0, t1
    with _bar(_frame_count(path), "pipeline") as bar:
        while runner.is_alive():
            runner.join(0.02)
            if (now_done := daemon.snapshot().frames_done.get(sid, 0)) > done:
                done, t_done = now_done, time.perf_counter()
                bar.n = done
                bar.refresh()
    elapsed = time.perf_counter() - t1
    snap = daemon.snapshot()
    frames = sum(src.frames_read for src in snap.sources)
    # fps counts to the exit (sinks and actions closed); processing_fps to the last frame's events, so a slow
    # action that the exit waits for shows in close_s, not as a slower pipeline.
    live = parts.door.liveness if parts.door is not None else None
    scored = {"liveness_faces_scored": live.faces_scored, "liveness_ms_per_face": round(
        1000 * live.scoring_s / live.faces_scored, 2) if live.faces_scored else None} if live is not None else {}
    return {**scored, "fps": frames / elapsed, "processing_fps": round(frames / max(1e-6, t_done - t1), 2),
            "close_s": round(elapsed - (t_done - t1), 3), "frames": frames, "startup_s": startup, "elapsed_s": elapsed,
            "faces_embedded": snap.faces_embedded, "latency": snap.latency, "exit_code": rc.get("rc"),
            "engines": snap.engines}


def baseline_fps(settings: Settings, path: Path, max_frames: int | None) -> dict[str, Any]:
    """facenet-pytorch's MTCNN on every full-resolution frame, then each face embedded on its own."""
    import torch
    from facenet_pytorch import MTCNN

    from daemon.engines import configured_embedder
    from models.detection import Detection

    torch.set_num_threads(os.cpu_count() or 1)  # the seed loop runs with torch's defaults
    t0 = time.perf_counter()
    mtcnn = MTCNN(keep_all=True, device="cpu")
    embedder = configured_embedder(settings)
    startup = time.perf_counter() - t0
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n = faces = 0
    total = min(_frame_count(path), max_frames or 1 << 30)
    t1 = time.perf_counter()
    with _bar(total, "baseline") as bar, torch.inference_mode():
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            boxes, probs, points = mtcnn.detect(rgb, landmarks=True)
            if boxes is None:  # no face: facenet-pytorch returns None boxes (and [None] probabilities)
                boxes, probs, points = [], [], []
            for box, prob, pts in zip(boxes, probs, points, strict=True):
                det = Detection(tuple(float(v) for v in box), float(prob), np.asarray(pts, dtype=np.float32))
                embedder.embed(embedder.align(rgb, det)[None])
                faces += 1
            n += 1
            bar.update()
    elapsed = time.perf_counter() - t1
    cap.release()
    return {"fps": n / elapsed if n else 0.0, "frames": n, "faces": faces, "startup_s": startup}


def door_run(settings: Settings, gallery: Path | None, path: Path, liveness: bool) -> dict[str, Any]:
    """The pipeline with the door profile (audit to a temporary file, no action), liveness on or off."""
    with tempfile.TemporaryDirectory(prefix="facestream-bench-door-") as tmp:
        settings = with_overrides(settings, door={"audit": str(Path(tmp) / "door.audit.jsonl"), "command": [],
                                                  "zmq_req": None}, liveness={"enabled": liveness})
        return pipeline_run(settings, gallery, path)


def run_bench(settings: Settings, gallery: Path | None, source: Path, baseline: bool,
              baseline_frames: int | None, liveness: str | None = None) -> dict[str, Any]:
    if not source.is_file():
        raise ValueError(f"video file not found: {source}")
    if liveness not in (None, "on", "off"):
        raise ValueError(f"--liveness must be 'on' or 'off', got {liveness!r}")
    dec, _ = decode_fps(source)
    pipe = (pipeline_run(settings, gallery, source) if liveness is None
            else door_run(settings, gallery, source, liveness == "on"))
    out: dict[str, Any] = {
        "source": str(source), "decode_fps": round(dec, 1), "pipeline_fps": round(pipe["fps"], 2),
        "processing_fps": pipe["processing_fps"], "close_s": pipe["close_s"],
        "baseline_fps": None, "speedup_vs_baseline": None,
        "fraction_of_decode": round(pipe["fps"] / dec, 4),
        "faces_embedded_per_s": round(pipe["faces_embedded"] / pipe["elapsed_s"], 2),
        "startup_s": round(pipe["startup_s"], 2),
        "latency_p50_ms": pipe["latency"]["p50_ms"], "latency_p99_ms": pipe["latency"]["p99_ms"],
        "frames": pipe["frames"], "threads_per_stage": settings.pipeline.threads_per_stage,
        "engines": pipe["engines"], "gpu_memory_mb": gpu_memory_mb(),
    }
    if liveness is not None:
        out.update(door=True, liveness=liveness, liveness_faces_scored=pipe.get("liveness_faces_scored", 0),
                   liveness_ms_per_face=pipe.get("liveness_ms_per_face"))
    if baseline:
        base = baseline_fps(settings, source, baseline_frames)
        out["baseline_fps"] = round(base["fps"], 3)
        out["baseline_frames"] = base["frames"]
        out["baseline_startup_s"] = round(base["startup_s"], 2)
        out["speedup_vs_baseline"] = round(pipe["fps"] / base["fps"], 2) if base["fps"] else None
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def compare_galleries(settings: Settings, gallery: Path | str | None, other: Path | str, source: Path,
                      rounds: int) -> dict[str, Any]:
    """The daemon on ``source`` against two galleries (a file and the same gallery in a database), alternating
    for ``rounds`` rounds in one process: frames/s of each and their ratio. The match stage holds its matcher
    in memory, so where the gallery is stored must not show in frames/s."""
    if not source.is_file():
        raise ValueError(f"video file not found: {source}")
    runs: dict[str, list[float]] = {"gallery": [], "vs_gallery": []}
    for _ in range(max(1, rounds)):
        for key, g in (("gallery", gallery), ("vs_gallery", other)):
            runs[key].append(pipeline_run(settings, g, source)["fps"])
    med = {k: float(np.median(v)) for k, v in runs.items()}
    return {"source": str(source), "gallery": str(gallery), "vs_gallery": str(other), "rounds": rounds,
            "gallery_fps": [round(v, 2) for v in runs["gallery"]],
            "vs_gallery_fps": [round(v, 2) for v in runs["vs_gallery"]],
            "median_gallery_fps": round(med["gallery"], 2), "median_vs_gallery_fps": round(med["vs_gallery"], 2),
            "ratio_vs_over_gallery": round(med["vs_gallery"] / med["gallery"], 3)}

