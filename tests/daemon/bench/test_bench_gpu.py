"""``bench gpu``: the prepared GPU check must work before a GPU is lent. Its dry run (every step, small, on the
CPU) prints one JSON line with every step's figures; asking for CUDA where there is none fails each step with
its reason, not silently on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from cli_helpers import REPO


def _bench_gpu(tmp_path, data_dir, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "daemon", "bench", "gpu", "--data", str(data_dir), *extra]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def test_dry_run_prints_one_line_with_every_step(tmp_path, data_dir) -> None:
    out = _bench_gpu(tmp_path, data_dir, "--dry-run")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["ok"] is True and r["device"] == "cpu" and r["dry_run"] is True
    emb = r["embed"]
    assert emb["fp32"]["faces_per_s"] > 0 and emb["fp16"]["faces_per_s"] > 0
    assert {emb[p]["provider"] for p in ("fp32", "fp16")} == {"CPUExecutionProvider"}
    assert r["pipeline_crowd"]["frames"] == 105 and r["pipeline_crowd"]["pipeline_fps"] > 0
    assert r["pipeline_crowd"]["engines"]["embedder"]["provider"] == "CPUExecutionProvider"
    steps = r["streams"]["steps"]
    assert [s["streams"] for s in steps][:1] == [1] and all(0 <= s["worst_processed_fraction"] <= 1 for s in steps)
    lfw = r["lfw_devtest"]
    assert lfw["fp32"]["pairs"] == lfw["fp16"]["pairs"] == 20
    assert lfw["fp16"]["embedded"] > 0  # fp16 embedded its own vectors, none reused from the fp32 pass
    assert lfw["fp32"]["accuracy"] >= 0.8 and abs(lfw["accuracy_delta"]) <= 0.05


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present on this machine")
def test_cuda_without_cuda_fails_every_step_with_its_reason(tmp_path, data_dir) -> None:
    out = _bench_gpu(tmp_path, data_dir, "--dry-run", "--device", "cuda")
    assert out.returncode == 1
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["ok"] is False
    for step in ("embed", "pipeline_crowd", "streams", "lfw_devtest"):
        assert "CUDA" in r[step]["error"], (step, r[step])
