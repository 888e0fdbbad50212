"""Inference runtimes: eager torch, TorchScript and ONNX Runtime behind one call signature.

Every runner takes float32 NCHW RGB pixels 0..255 and returns float32 [N, D]. Runners say which
device/provider they actually got; asking for CUDA where there is none is an error unless CPU
fallback is allowed (silent CPU fallback hides a 10x slowdown).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog
import torch
from torch import nn

from models.export import export_onnx, export_torchscript
from models.paths import default_cache_dir
from models.registry import RUNTIMES

log = structlog.get_logger(__name__)


class RuntimeUnavailableError(RuntimeError):
    """The requested runtime or device cannot be had here."""


class Runner(Protocol):
    runtime: str
    provider: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def module_fingerprint(module: nn.Module) -> str:
    """Hash of all parameters and buffers: names exported files after the exact weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _torch_device(device: str, allow_cpu_fallback: bool) -> torch.device:
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if torch.cuda.is_available():
            return torch.device(device)
        if allow_cpu_fallback:
            log.warning("cuda_unavailable_falling_back_to_cpu", requested=device)
            return torch.device("cpu")
        raise RuntimeUnavailableError(
            f"device {device!r} requested but CUDA is not available; set allow_cpu_fallback to run on CPU")
    raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")


class TorchRunner:
    """Eager torch (``runtime='torch'``) or a TorchScript module (``runtime='torchscript'``)."""

    def __init__(self, module: nn.Module, device: torch.device, runtime: str = "torch") -> None:
        self.module = module.to(device).eval()
        self.device = device
        self.runtime = runtime
        self.provider = str(device)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()


class OnnxRunner:
    """ONNX Runtime session over an exported model file."""

    runtime = "onnx"

    def __init__(self, path: Path, device: str, allow_cpu_fallback: bool, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailableError(
                "onnxruntime is not installed: pip install 'facestream[cpu]' (or '[gpu]' for CUDA)") from None
        want_cuda = device.startswith("cuda")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        providers = [p for p in providers if p in available]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        got = self.session.get_providers()
        self.provider = got[0] if got else "none"
        if want_cuda and self.provider != "CUDAExecutionProvider":
            if not allow_cpu_fallback:
                raise RuntimeUnavailableError(
                    f"ONNX Runtime could not use CUDA (got {got}); install 'facestream[gpu]' with a working "
                    "CUDA, or set allow_cpu_fallback")
            log.warning("onnx_cuda_unavailable_falling_back_to_cpu", providers=got)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def make_runner(module: nn.Module, name: str, input_size: int, runtime: str, device: str = "cpu",
                allow_cpu_fallback: bool = False, export_dir: Path | None = None, threads: int = 0) -> Runner:
    """Wrap ``module`` in the requested runtime, exporting (and caching the export) as needed."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    module = module.eval()
    if runtime == "onnx":
        export_dir = export_dir or default_cache_dir() / "exports"
        path = export_dir / f"{name}-{module_fingerprint(module)}.onnx"
        if not path.is_file():
            export_onnx(module, input_size, path)
        return OnnxRunner(path, device, allow_cpu_fallback, threads)
    dev = _torch_device(device, allow_cpu_fallback)
    if runtime == "torchscript":
        scripted = export_torchscript(module, input_size, None)
        return TorchRunner(scripted, dev, "torchscript")
    return TorchRunner(module, dev, "torch")
