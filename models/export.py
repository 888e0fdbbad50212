"""Export embedders to ONNX and TorchScript files with a dynamic batch axis."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn


def _example(input_size: int, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, input_size, input_size, generator=g) * 255.0


def atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def export_onnx(module: nn.Module, input_size: int, path: Path) -> Path:
    """Write an ONNX file (opset 17, batch axis dynamic); written to a temp file then renamed."""
    tmp = atomic_target(path)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval().cpu(), (_example(input_size),), str(tmp), dynamo=False,
                input_names=["chips"], output_names=["embeddings"],
                dynamic_axes={"chips": {0: "batch"}, "embeddings": {0: "batch"}}, opset_version=17,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_torchscript(module: nn.Module, input_size: int, path: Path | None) -> torch.jit.ScriptModule:
    """Trace ``module`` (the networks are static) and optionally save it."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.freeze(torch.jit.trace(module.eval().cpu(), _example(input_size), check_trace=False))
    if path is not None:
        tmp = atomic_target(path)
        try:
            traced.save(str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return traced
