"""Inference runtimes: eager torch, TorchScript and ONNX Runtime behind one call signature.

Every runner takes float32 NCHW RGB pixels 0..255 and returns float32 [N, D]. Runners say which
device/provider they actually got; asking for CUDA where there is none is an error unless CPU
fallback is allowed (silent CPU fallback hides a 10x slowdown).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

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


PRECISIONS = ("fp32", "fp16")


class Runner(Protocol):
    runtime: str
    provider: str
    precision: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def module_fingerprint(module: nn.Module) -> str:
    """Hash of all parameters and buffers: names exported files after the exact weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def torch_device(device: str, allow_cpu_fallback: bool) -> torch.device:
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


class HalfPrecision(nn.Module):
    """``module`` with fp16 weights and activations behind float32 input and output: the half-precision
    model every runtime runs (and ONNX exports) with the same call signature as the float32 one."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.half()).float()


def with_precision(module: nn.Module, precision: str) -> nn.Module:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return module
    import copy

    return HalfPrecision(copy.deepcopy(module)).eval()  # the caller's float32 module stays as it was


class TorchRunner:
    """Eager torch (``runtime='torch'``) or a TorchScript module (``runtime='torchscript'``)."""

    def __init__(self, module: nn.Module, device: torch.device, runtime: str = "torch",
                 precision: str = "fp32") -> None:
        self.module = module.to(device).eval()
        self.device = device
        self.runtime = runtime
        self.provider = str(device)
        self.precision = precision

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()


class OnnxRunner:
    """ONNX Runtime session over an exported model file."""

    runtime = "onnx"

    def __init__(self, path: Path, device: str, allow_cpu_fallback: bool, threads: int = 0,
                 precision: str = "fp32") -> None:
        self.session = onnx_session(path, device, allow_cpu_fallback, threads)
        self.provider = self.session.get_providers()[0]
        self.precision = precision
        self.device_id = cuda_index(device)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.provider != "CUDAExecutionProvider":
            return self.session.run(None, {self.input_name: x})[0]
        # I/O binding on CUDA: the batch goes to the GPU once and every layer's output stays there; only the
        # [N, D] embeddings come back (session.run would also stage through host buffers it allocates per call).
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        binding.bind_output(self.output_name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def cuda_index(device: str) -> int:
    """The N of 'cuda:N' (0 for 'cuda' and 'cpu')."""
    _, _, n = device.partition(":")
    return int(n) if n.isdigit() else 0


def onnx_session(path: Path, device: str, allow_cpu_fallback: bool, threads: int = 0) -> Any:
    """An ONNX Runtime session on CUDA's execution provider when ``device`` asks for it (an error when it
    cannot be had, unless CPU fallback is allowed), else on the CPU with ``threads`` non-spinning threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailableError(
            "onnxruntime is not installed: pip install 'facestream[cpu]' (or '[gpu]' for CUDA)") from None
    want_cuda = device.startswith("cuda")
    providers: list[Any] = ["CPUExecutionProvider"]
    if want_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda_index(device)}))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # Worker threads that spin between runs steal the other stages' core (two pools on 2 cores crawl).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=providers)
    got = session.get_providers()
    if want_cuda and got[0] != "CUDAExecutionProvider":
        if not allow_cpu_fallback:
            raise RuntimeUnavailableError(
                f"ONNX Runtime could not use CUDA for {path.name} (providers here: {ort.get_available_providers()}); "
                "install 'facestream[gpu]' with a working CUDA, or set allow_cpu_fallback")
        log.warning("onnx_cuda_unavailable_falling_back_to_cpu", model=path.name, providers=got)
    return session


def make_runner(module: nn.Module, name: str, input_size: int, runtime: str, device: str = "cpu",
                allow_cpu_fallback: bool = False, export_dir: Path | None = None, threads: int = 0,
                precision: str = "fp32") -> Runner:
    """Wrap ``module`` in the requested runtime and precision, exporting (and caching the export) as needed."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    fingerprint = module_fingerprint(module.eval())  # of the float32 weights: fp16 is named after them
    module = with_precision(module, precision)
    if runtime == "onnx":
        export_dir = export_dir or default_cache_dir() / "exports"
        suffix = "" if precision == "fp32" else f"-{precision}"
        path = export_dir / f"{name}-{fingerprint}{suffix}.onnx"
        if not path.is_file():
            export_onnx(module, input_size, path)
        return OnnxRunner(path, device, allow_cpu_fallback, threads, precision)
    dev = torch_device(device, allow_cpu_fallback)
    if runtime == "torchscript":
        scripted = export_torchscript(module, input_size, None)
        return TorchRunner(scripted, dev, "torchscript", precision)
    return TorchRunner(module, dev, "torch", precision)
