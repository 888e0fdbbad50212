"""``facestream bench gpu``: the prepared GPU check, one command that prints one JSON line.

A session lent a GPU machine has minutes, not hours, so everything the GPU path promises is measured in one
run of under eight minutes: embedding throughput in fp32 and fp16, the pipeline on the 1080p crowd clip,
how many 1080p cameras (a file read N times as live, real-time sources, no RTSP server needed) keep up
before one stops, and LFW DevTest accuracy in fp16 against fp32. ``--dry-run`` runs every step small on the
CPU, so the check is known to work before a GPU is ever lent (a test runs it).

Install first: ``pip install -e '.[gpu]'`` (onnxruntime-gpu); then ``facestream bench gpu --device cuda``.
"""

from __future__ import annotations

import csv
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.bench.gpu_memory import gpu_memory_mb
from daemon.config import Settings, with_overrides


@dataclass(frozen=True)
class GpuPlan:
    """How big each step is: the full check on a GPU, or the dry run's small one on the CPU."""

    embed_batch: int
    embed_seconds: float
    stream_counts: tuple[int, ...]
    stream_seconds: float
    stream_warmup_s: float
    stream_size: str
    stream_fps: float
    lfw_pairs: int | None  # None: all 1,000 DevTest pairs

    @classmethod
    def full(cls) -> GpuPlan:
        return cls(64, 5.0, (1, 2, 4, 8, 12, 16, 24, 32), 20.0, 5.0, "1920x1080", 25.0, None)

    @classmethod
    def dry(cls) -> GpuPlan:
        return cls(8, 0.5, (1, 2), 2.0, 1.0, "640x360", 10.0, 20)


def _on(settings: Settings, device: str, precision: str = "fp32") -> Settings:
    return with_overrides(settings, embedder={"device": device, "precision": precision, "runtime": "onnx"},
                          detector={"device": device})


def embed_step(settings: Settings, device: str, plan: GpuPlan) -> dict[str, Any]:
    from daemon.engines import configured_embedder
    from tools.bench import bench_embed

    out: dict[str, Any] = {}
    for precision in ("fp32", "fp16"):
        r = bench_embed(configured_embedder(_on(settings, device, precision)), plan.embed_batch, plan.embed_seconds)
        out[precision] = {k: r[k] for k in ("faces_per_s", "ms_per_face", "provider", "batch")} | {
            "gpu_memory_mb": gpu_memory_mb()}
    out["fp16_speedup"] = round(out["fp16"]["faces_per_s"] / out["fp32"]["faces_per_s"], 3)
    return out


def pipeline_step(settings: Settings, device: str, crowd: Path) -> dict[str, Any]:
    from daemon.bench.pipeline import run_bench

    r = run_bench(_on(settings, device), None, crowd, False, None)
    return {k: r[k] for k in ("pipeline_fps", "decode_fps", "faces_embedded_per_s", "latency_p99_ms", "frames",
                              "engines", "gpu_memory_mb")}


def streams_step(settings: Settings, device: str, video: Path, plan: GpuPlan) -> dict[str, Any]:
    """N copies of the clip as live real-time cameras, N growing until a camera processes under 97 % of the
    frames it received or the queues grow: the largest N that kept up is the answer."""
    from daemon.bench.live import measure, prepare

    rows, kept_up = [], 0
    with tempfile.TemporaryDirectory(prefix="facestream-gpu-") as tmp:
        served = Path(tmp) / "camera.mp4"
        prepare(video, served, 30.0, plan.stream_fps, plan.stream_size)
        for n in plan.stream_counts:
            r = measure(_on(settings, device), None, [str(served)] * n, plan.stream_seconds, plan.stream_warmup_s,
                        0.5, {"live": True, "realtime": True, "loop": True})
            worst = min(s["frames_processed"] / max(1, s["frames_processed"] + s["frames_dropped_stale"])
                        for s in r["per_source"])
            ok = worst >= 0.97 and not r["queue_grew"]
            rows.append({"streams": n, "worst_processed_fraction": round(worst, 4), "queue_grew": r["queue_grew"],
                         "latency_p99_ms": r["latency_p99_ms"], "gpu_memory_mb": r["gpu_memory_mb"], "kept_up": ok})
            if not ok:
                break
            kept_up = n
    return {"size": plan.stream_size, "fps": plan.stream_fps, "streams_kept_up": kept_up, "steps": rows}


def lfw_step(settings: Settings, device: str, data_dir: Path, pairs: int | None) -> dict[str, Any]:
    """DevTest accuracy (threshold tuned on DevTrain) in fp32 and fp16, embeddings never from a cache."""
    from daemon.engines import still_engine
    from pipeline.gallery.cache import EmbeddingCache
    from tools.verify import run_verify

    lfw = data_dir / "lfw"
    with tempfile.TemporaryDirectory(prefix="facestream-gpu-lfw-") as tmp:
        test, tune = lfw / "pairs_devtest.csv", lfw / "pairs_devtrain.csv"
        if pairs is not None:  # the dry run: the first and last pairs of each list (same, then different)
            test, tune = _slice(test, Path(tmp) / "test.csv", pairs), _slice(tune, Path(tmp) / "tune.csv", pairs)
        out: dict[str, Any] = {}
        for precision in ("fp32", "fp16"):
            engine = still_engine(_on(settings, device, precision), "center", EmbeddingCache(None))
            r = run_verify(engine, str(test), str(tune))
            out[precision] = {k: r[k] for k in ("accuracy", "auc", "threshold", "pairs", "failed_detections",
                                                "provider", "embedded")}
    out["accuracy_delta"] = round(out["fp16"]["accuracy"] - out["fp32"]["accuracy"], 5)
    if out["fp32"]["failed_detections"] > out["fp32"]["pairs"] // 10:
        raise ValueError(f"{out['fp32']['failed_detections']} LFW images without a face: the data is not LFW's")
    return out


def _slice(src: Path, dst: Path, n: int) -> Path:
    """``n`` pairs from both ends of a same-then-different list, paths made absolute."""
    src = src.resolve()
    with src.open(newline="") as f:
        rows = list(csv.DictReader(f))
    keep = rows[: n // 2] + rows[-(n - n // 2):]
    with dst.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["img_a", "img_b", "same"])
        w.writeheader()
        for r in keep:
            w.writerow({"img_a": str(src.parent / r["img_a"]), "img_b": str(src.parent / r["img_b"]),
                        "same": r["same"]})
    return dst


def run_bench_gpu(settings: Settings, data_dir: Path, device: str, dry_run: bool) -> dict[str, Any]:
    crowd = data_dir / "videos" / "multi_face" / "facenet_pytorch_crowd.mp4"
    if not crowd.is_file():
        raise ValueError(f"shared data not found: {crowd} (set FACESTREAM_DATA or --data)")
    plan = GpuPlan.dry() if dry_run else GpuPlan.full()
    t0 = time.perf_counter()
    result: dict[str, Any] = {"device": device, "dry_run": dry_run, "machine": platform.node(),
                              "gpu_memory_mb_at_start": gpu_memory_mb()}
    steps = (("embed", lambda: embed_step(settings, device, plan)),
             ("pipeline_crowd", lambda: pipeline_step(settings, device, crowd)),
             ("streams", lambda: streams_step(settings, device, crowd, plan)),
             ("lfw_devtest", lambda: lfw_step(settings, device, data_dir, plan.lfw_pairs)))
    for name, step in steps:
        t = time.perf_counter()
        try:
            result[name] = step() | {"seconds": round(time.perf_counter() - t, 1)}
        except Exception as exc:  # one step failing must not cost the figures of the others
            result[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["ok"] = not any(isinstance(v, dict) and "error" in v for v in result.values())
    return result
