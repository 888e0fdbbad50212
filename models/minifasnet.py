"""MiniFASNetV2 and MiniFASNetV1SE (Silent-Face-Anti-Spoofing's passive liveness nets), their checksummed
weights, and their runners (ONNX Runtime or eager torch).

The layer names follow the published state dicts so they load with ``strict=True``; the networks are a
MobileFaceNet-style stack of inverted bottlenecks whose widths were pruned per block (the tables below).
The published models were trained on BGR uint8 crops turned into floats *without* scaling to 0..1
(upstream's ``to_tensor`` has the division commented out), so :class:`LivenessNet` takes our usual RGB
0..255 floats, swaps the channels, runs the net and returns the softmax (class 1 = live).

Weight lookup: a configured folder, then ``~/.cache/facestream/liveness``, then a download from upstream;
every file is checked against the SHA-256 in :data:`models.registry.LIVENESS_MODELS` before torch reads it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.export import atomic_target
from models.paths import default_cache_dir
from models.registry import LivenessSpec, get_liveness_spec

MAX_DOWNLOAD_BYTES = 16 << 20  # the published files are 1.8 MB; anything far larger is not them
EXPORT_VERSION = 2  # part of the ONNX file name: bump when the exported graph changes for the same weights


class LivenessWeightsError(ValueError):
    """Liveness weights missing, not downloadable, or not the published bytes."""


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm, with PReLU unless ``linear`` (upstream's Conv_block / Linear_block)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1,
                 linear: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        if not linear:
            self.prelu = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if not hasattr(self, "prelu"):
            return x
        if torch.onnx.is_in_onnx_export():
            # The same function as Relu/Min/Mul/Add: ONNX Runtime's PRelu with per-channel slopes is its slowest
            # kernel here (half of a run's 3.1 ms on one thread; 1.8 ms this way, outputs equal to 1e-7).
            return torch.relu(x) + self.prelu.weight.view(1, -1, 1, 1) * torch.clamp(x, max=0.0)
        return self.prelu(x)


class SqueezeExcite(nn.Module):
    """Channel gate from the pooled features (1x1 convs with BatchNorm, as in the SE weights)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = channels // reduction
        self.fc1, self.bn1 = nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.fc2, self.bn2 = nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(x, 1)
        g = self.bn2(self.fc2(F.relu(self.bn1(self.fc1(g)))))
        return x * torch.sigmoid(g)


class Bottleneck(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; with ``residual`` the input is added back, after the
    squeeze-excite gate when there is one."""

    def __init__(self, c_in: int, expand: int, c_out: int, stride: int, residual: bool, se: bool = False) -> None:
        super().__init__()
        self.conv = ConvBN(c_in, expand)
        self.conv_dw = ConvBN(expand, expand, 3, stride, 1, groups=expand)
        self.project = ConvBN(expand, c_out, linear=True)
        self.residual = residual
        if se:
            self.se_module = SqueezeExcite(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if not self.residual:
            return y
        if hasattr(self, "se_module"):
            y = self.se_module(y)
        return x + y


class Stage(nn.Module):
    """Residual bottlenecks at one width; with ``se`` the last one carries a squeeze-excite gate."""

    def __init__(self, width: int, expansions: Sequence[int], se: bool) -> None:
        super().__init__()
        last = len(expansions) - 1
        self.model = nn.Sequential(*(Bottleneck(width, e, width, 1, True, se and i == last)
                                     for i, e in enumerate(expansions)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# Pruned expansion widths per stage (the only difference between V1 and V2 besides V1SE's gates).
_EXPANSIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "MiniFASNetV1": ((13, 26, 13, 52), (154, 52, 26, 52, 26, 26)),
    "MiniFASNetV2": ((13, 13, 13, 13), (231, 52, 26, 77, 26, 26)),
}


class MiniFASNet(nn.Module):
    """80x80 input: 40 (stem) -> 20 (64 ch) -> 10 (128) -> 5 (128) -> 512-D by a 5x5 depthwise conv -> 128 -> 3."""

    def __init__(self, stage3: Sequence[int], stage4: Sequence[int], se: bool, input_size: int = 80,
                 classes: int = 3) -> None:
        super().__init__()
        k = (input_size + 15) // 16  # the final feature map's side (upstream's get_kernel)
        self.conv1 = ConvBN(3, 32, 3, 2, 1)
        self.conv2_dw = ConvBN(32, 32, 3, 1, 1, groups=32)
        self.conv_23 = Bottleneck(32, 103, 64, 2, residual=False)
        self.conv_3 = Stage(64, stage3, se)
        self.conv_34 = Bottleneck(64, 231, 128, 2, residual=False)
        self.conv_4 = Stage(128, stage4, se)
        self.conv_45 = Bottleneck(128, 308, 128, 2, residual=False)
        self.conv_5 = Stage(128, (26, 26), se)
        self.conv_6_sep = ConvBN(128, 512)
        self.conv_6_dw = ConvBN(512, 512, k, groups=512, linear=True)
        self.linear = nn.Linear(512, 128, bias=False)
        self.bn = nn.BatchNorm1d(128)
        self.prob = nn.Linear(128, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34, self.conv_4, self.conv_45,
                      self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = layer(x)
        return self.prob(self.bn(self.linear(x.flatten(1))))  # upstream's dropout: training only


def build_arch(arch: str, input_size: int = 80, classes: int = 3) -> MiniFASNet:
    """An untrained network of the named architecture."""
    if arch == "MiniFASNetV2":
        return MiniFASNet(*_EXPANSIONS["MiniFASNetV2"], se=False, input_size=input_size, classes=classes)
    if arch == "MiniFASNetV1SE":
        return MiniFASNet(*_EXPANSIONS["MiniFASNetV1"], se=True, input_size=input_size, classes=classes)
    raise ValueError(f"unknown MiniFASNet architecture {arch!r}; choose MiniFASNetV2 or MiniFASNetV1SE")


class LivenessNet(nn.Module):
    """RGB float 0..255 NCHW in, class probabilities out: the published BGR, unscaled input, then softmax."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.net(x[:, [2, 1, 0]]), dim=1)


def liveness_cache_dir() -> Path:
    return default_cache_dir() / "liveness"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(spec: LivenessSpec, path: Path) -> Path:
    try:
        got = file_sha256(path)
    except OSError as exc:
        raise LivenessWeightsError(f"{spec.name}: cannot read weights file {path} ({exc.strerror or exc}); "
                                   f"expected SHA-256 {spec.sha256}") from None
    if got != spec.sha256:
        raise LivenessWeightsError(f"{spec.name}: weights file {path} is corrupt or not the published file "
                                   f"(SHA-256 {got[:16]}..., expected {spec.sha256}); replace it from {spec.url}")
    return path


def _download(spec: LivenessSpec, target: Path, timeout_s: float = 30.0) -> None:
    """Fetch ``spec.url`` into ``target``, checked against the checksum before it takes the file's name."""
    tmp = atomic_target(target)
    try:
        h, size = hashlib.sha256(), 0
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as resp, tmp.open("wb") as out:
            while chunk := resp.read(1 << 16):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise OSError(f"more than {MAX_DOWNLOAD_BYTES} bytes")
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != spec.sha256:
            raise OSError(f"downloaded SHA-256 {h.hexdigest()[:16]}... differs")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def resolve_liveness_weights(spec: LivenessSpec, weights_dir: str | Path | None = None,
                             cache_dir: Path | None = None, download: bool = True) -> Path:
    """A local, checksum-verified path to ``spec``'s weights: ``weights_dir`` (when set, the file must be
    there), else the cache, else a download into the cache."""
    if weights_dir:
        path = Path(weights_dir).expanduser() / spec.filename
        if not path.is_file():
            raise LivenessWeightsError(f"{spec.name}: weights file {path} not found (expected SHA-256 "
                                       f"{spec.sha256}; download: {spec.url})")
        return _verified(spec, path)
    cached = (cache_dir or liveness_cache_dir()) / spec.filename
    if cached.is_file():
        return _verified(spec, cached)
    hint = f"put {spec.filename} (SHA-256 {spec.sha256}) in {cached.parent} or a weights folder ({spec.url})"
    if not download:
        raise LivenessWeightsError(f"{spec.name}: weights not found; {hint}")
    try:
        _download(spec, cached)
    except Exception as exc:  # any network/IO failure ends in one clear line
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise LivenessWeightsError(f"{spec.name}: weights not found and download failed ({reason}); {hint}") from None
    return cached


def load_minifasnet(name: str, weights_dir: str | Path | None = None, cache_dir: Path | None = None,
                    download: bool = True) -> LivenessNet:
    """The named liveness model with its verified published weights, in eval mode."""
    spec = get_liveness_spec(name)
    path = resolve_liveness_weights(spec, weights_dir, cache_dir, download)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    net = build_arch(spec.arch, spec.input_size, spec.classes)
    net.load_state_dict(state, strict=True)
    return LivenessNet(net).eval()


LivenessFn = Callable[[np.ndarray], np.ndarray]  # float32 (N, 3, S, S) RGB 0..255 -> float32 (N, classes)


def padded_batch(n: int) -> int:
    """Batch size ``n`` crops run as on ONNX Runtime: powers of two up to 16, then multiples of 16, so the
    arena sees a handful of shapes and stops growing (onnxruntime #11627)."""
    if n <= 16:
        return 1 << max(0, (n - 1).bit_length())
    return -(-n // 16) * 16


def _torch_fn(module: nn.Module) -> LivenessFn:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return run


def export_liveness_onnx(module: LivenessNet, path: Path, input_size: int) -> Path:
    """ONNX (opset 17, dynamic batch) of the whole LivenessNet, written to a temp file then renamed."""
    tmp = atomic_target(path)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = torch.rand(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)) * 255.0
            torch.onnx.export(module.eval(), (example,), str(tmp), dynamo=False, input_names=["crops"],
                              output_names=["probs"], dynamic_axes={"crops": {0: "n"}, "probs": {0: "n"}},
                              opset_version=17)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _onnx_fn(module: LivenessNet, name: str, input_size: int, threads: int, export_dir: Path) -> LivenessFn:
    from models.runtime import module_fingerprint, onnx_session

    path = export_dir / f"liveness-{name}-e{EXPORT_VERSION}-{module_fingerprint(module)}.onnx"
    if not path.is_file():
        export_liveness_onnx(module, path, input_size)
    session = onnx_session(path, "cpu", False, threads)  # non-spinning threads: the other stages keep their core

    def run(x: np.ndarray) -> np.ndarray:
        n = len(x)
        size = padded_batch(n)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if size != n:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), dtype=np.float32)])
        return session.run(None, {"crops": x})[0][:n]

    return run


def liveness_fn(module: LivenessNet, name: str, runtime: str = "onnx", threads: int = 1,
                export_dir: Path | None = None) -> LivenessFn:
    """``module`` as a function on ``runtime`` ('onnx': exported once into ``export_dir``, run on ``threads``
    ONNX Runtime threads; 'torch': eager, on torch's own thread setting)."""
    module = module.eval()
    if runtime == "torch":
        return _torch_fn(module)
    if runtime != "onnx":
        raise ValueError(f"liveness runtime must be 'onnx' or 'torch', got {runtime!r}")
    spec = get_liveness_spec(name)
    return _onnx_fn(module, name, spec.input_size, threads, export_dir or default_cache_dir() / "exports")
