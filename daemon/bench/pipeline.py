"""``facestream bench pipeline``: the daemon's throughput on a file against the decode floor and the
seed-style loop, in one process, so the three figures are comparable.

- decode: the same FFmpeg backend reading every frame, nothing else (the ceiling);
- pipeline: the daemon at the given settings (file source, no sinks), timed from its first frame;
- baseline (``--baseline``): what the "FaceNet + SVM" notebooks do: facenet-pytorch's own MTCNN on every
  frame at full resolution, then one embedding per face, no batching, skipping or tracking.
Model loading is reported separately (``startup_s``), never inside a frames/s figure.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from daemon.config import Settings
from daemon.runner import Daemon


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
    daemon = Daemon(settings, gallery)
    sid = daemon.specs[0].id
    startup = time.perf_counter() - t0
    rc: dict[str, int] = {}
    runner = threading.Thread(target=lambda: rc.update(rc=daemon.run(install_signals=False)), daemon=True)
    t1 = time.perf_counter()
    runner.start()
    with _bar(_frame_count(path), "pipeline") as bar:
        while runner.is_alive():
            runner.join(0.2)
            bar.n = daemon.snapshot().frames_done.get(sid, 0)
            bar.refresh()
    elapsed = time.perf_counter() - t1
    snap = daemon.snapshot()
    frames = sum(src.frames_read for src in snap.sources)
    return {"fps": frames / elapsed, "frames": frames, "startup_s": startup, "elapsed_s": elapsed,
            "faces_embedded": snap.faces_embedded, "latency": snap.latency, "exit_code": rc.get("rc")}


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


def run_bench(settings: Settings, gallery: Path | None, source: Path, baseline: bool,
              baseline_frames: int | None) -> dict[str, Any]:
    if not source.is_file():
        raise ValueError(f"video file not found: {source}")
    dec, _ = decode_fps(source)
    pipe = pipeline_run(settings, gallery, source)
    out: dict[str, Any] = {
        "source": str(source), "decode_fps": round(dec, 1), "pipeline_fps": round(pipe["fps"], 2),
        "baseline_fps": None, "speedup_vs_baseline": None,
        "fraction_of_decode": round(pipe["fps"] / dec, 4),
        "faces_embedded_per_s": round(pipe["faces_embedded"] / pipe["elapsed_s"], 2),
        "startup_s": round(pipe["startup_s"], 2),
        "latency_p50_ms": pipe["latency"]["p50_ms"], "latency_p99_ms": pipe["latency"]["p99_ms"],
        "frames": pipe["frames"], "threads_per_stage": settings.pipeline.threads_per_stage,
    }
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

