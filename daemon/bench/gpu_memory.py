"""GPU memory in use, for the benchmarks' JSON: read from ``nvidia-smi`` (ONNX Runtime's CUDA allocations are not
torch's, so torch's counters would miss them). None where there is no NVIDIA GPU or driver tool."""

from __future__ import annotations

import shutil
import subprocess


def gpu_memory_mb() -> list[int] | None:
    """Megabytes used on each GPU now, or None without ``nvidia-smi``."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return [int(x) for x in r.stdout.split() if x.strip().isdigit()]
