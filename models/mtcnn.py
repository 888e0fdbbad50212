"""MTCNN's P-, R- and O-nets on facenet-pytorch's shipped weights, behind ONNX Runtime or eager torch.

The weight files are located, never imported: importing facenet-pytorch pulls in torchvision and
torch._dynamo (~1.4 s a process). ONNX Runtime is the default: on one thread it runs the R-/O-nets
2-2.5x faster than eager torch and the P-net pyramid ~1.3x (measured on 1080p and 360p frames).
Its arena grows with every new input shape (onnxruntime #11627), so R-/O-net batches are padded to a
few fixed sizes and the P-net only ever sees the pyramid shapes of the stream's resolution.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def weights_dir() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MTCNN weights not found: install facenet-pytorch==2.5.3")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


NetFn = Callable[[np.ndarray], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class MtcnnNets:
    """The three networks as functions of float32 NCHW input (already normalised to [-1, 1])."""

    pnet: NetFn
    rnet: NetFn
    onet: NetFn
    runtime: str
    provider: str = "CPUExecutionProvider"  # ONNX Runtime's execution provider, or torch's device


def load_modules() -> tuple[PNet, RNet, ONet]:
    d = weights_dir()
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, ("pnet.pt", "rnet.pt", "onet.pt"), strict=True):
        net.load_state_dict(torch.load(d / name, map_location="cpu", weights_only=True))
        net.eval()
    return nets  # type: ignore[return-value]


def _torch_fn(module: nn.Module, device: torch.device) -> NetFn:
    module = module.to(device)

    def run(x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(device))
        return tuple(o.cpu().numpy() for o in out)

    return run


def _onnx_fn(module: nn.Module, name: str, export_dir: Path, threads: int, example: tuple[int, ...],
             device: str = "cpu", allow_cpu_fallback: bool = False) -> tuple[NetFn, str]:
    from models.export import atomic_target
    from models.runtime import module_fingerprint, onnx_session

    path = export_dir / f"mtcnn-{name}-{module_fingerprint(module)}.onnx"
    if not path.is_file():
        import warnings

        outs = ["reg", "lm", "prob"] if name == "onet" else ["reg", "prob"]
        axes = {0: "n", 2: "h", 3: "w"} if name == "pnet" else {0: "n"}
        tmp = atomic_target(path)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module.cpu(), (torch.zeros(example),), str(tmp), dynamo=False, input_names=["x"],
                                  output_names=outs, dynamic_axes={"x": axes, **{o: {0: "n"} for o in outs}},
                                  opset_version=17)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    session = onnx_session(path, device, allow_cpu_fallback, threads)

    def run(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(session.run(None, {"x": x}))

    return run, session.get_providers()[0]


def load_nets(runtime: str = "onnx", device: str = "cpu", threads: int = 1, export_dir: Path | None = None,
              allow_cpu_fallback: bool = False) -> MtcnnNets:
    """The cascade's networks on ``runtime`` ('onnx' or 'torch') and ``device`` (ONNX on 'cuda' runs CUDA's
    execution provider: an error where there is none, unless CPU fallback is allowed); exports are cached in
    ``export_dir``."""
    modules = load_modules()
    if runtime == "torch":
        from models.runtime import torch_device

        dev = torch_device(device, allow_cpu_fallback)
        return MtcnnNets(*(_torch_fn(m, dev) for m in modules), runtime="torch", provider=str(dev))
    if runtime != "onnx":
        raise ValueError(f"detector runtime must be 'onnx' or 'torch', got {runtime!r}")
    if export_dir is None:
        from models.paths import default_cache_dir

        export_dir = default_cache_dir() / "exports"
    fns = [_onnx_fn(m, n, export_dir, threads, ex, device, allow_cpu_fallback) for m, n, ex in
           zip(modules, ("pnet", "rnet", "onet"), ((1, 3, 64, 64), (2, 3, 24, 24), (2, 3, 48, 48)), strict=True)]
    return MtcnnNets(*(f for f, _ in fns), runtime="onnx", provider=fns[0][1])
