"""``facestream bench embed``: embedding throughput on chips of the model's input size."""

from __future__ import annotations

import time

import numpy as np

from models.embedder import Embedder


def bench_embed(embedder: Embedder, batch: int, seconds: float = 5.0, warmup: int = 2) -> dict[str, float | int | str]:
    """Time whole batches for about ``seconds`` after ``warmup`` untimed batches."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    s = embedder.input_size
    chips = np.random.default_rng(0).integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    for _ in range(warmup):
        embedder.embed(chips)
    runs = 0
    start = time.perf_counter()
    while True:
        embedder.embed(chips)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and runs >= 3:
            break
    import torch

    return {
        "model": embedder.model_id,
        "runtime": embedder.runner.runtime,
        "provider": embedder.runner.provider,
        "precision": embedder.precision,
        "batch": batch,
        "batches": runs,
        "faces_per_s": round(runs * batch / elapsed, 1),
        "ms_per_face": round(1000 * elapsed / (runs * batch), 3),
        "threads": torch.get_num_threads(),
    }
