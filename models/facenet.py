"""FaceNet (facenet-pytorch's InceptionResnetV1) with an explicit, offline-friendly weight lookup.

Lookup order: a configured file, facenet-pytorch's own cache ($TORCH_HOME/checkpoints), then its
download. When none works the error names the file, where to put it and the URL to fetch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

FACENET_WEIGHTS = {
    "facenet-vggface2": (
        "vggface2",
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    ),
    "facenet-casia": (
        "casia-webface",
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
    ),
}


class WeightsNotFoundError(FileNotFoundError):
    """Weights are neither configured, cached nor downloadable."""


def facenet_cache_dir() -> Path:
    """facenet-pytorch's checkpoint folder (same rule as its ``get_torch_home``)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "checkpoints"


class StandardizedFaceNet(nn.Module):
    """InceptionResnetV1 taking float pixels 0..255 (NCHW RGB), standardising as facenet-pytorch does."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 127.5) / 128.0)


def resolve_facenet_weights(model: str, weights_path: str | Path | None, download: bool = True) -> Path:
    """Return a local path to the state dict for ``model``, downloading it only as a last resort."""
    if model not in FACENET_WEIGHTS:
        raise ValueError(f"unknown FaceNet model {model!r}; choose one of {sorted(FACENET_WEIGHTS)}")
    _, url = FACENET_WEIGHTS[model]
    filename = url.rsplit("/", 1)[1]
    if weights_path:
        path = Path(weights_path).expanduser()
        if path.is_file():
            return path
        raise WeightsNotFoundError(f"{model}: configured weights file {path} does not exist")
    cached = facenet_cache_dir() / filename
    if cached.is_file():
        return cached
    hint = f"put {filename} in {cached.parent} or set embedder.weights_path (download: {url})"
    if not download:
        raise WeightsNotFoundError(f"{model}: weights not found; {hint}")
    try:
        from facenet_pytorch.models.utils.download import download_url_to_file

        cached.parent.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(cached), progress=False)
    except Exception as exc:  # any network/IO failure ends in one clear message
        if cached.exists() and cached.stat().st_size == 0:
            cached.unlink()
        raise WeightsNotFoundError(f"{model}: weights not found and download failed ({exc}); {hint}") from None
    return cached


def load_facenet(model: str, weights_path: str | Path | None = None, download: bool = True) -> nn.Module:
    """Build InceptionResnetV1 (512-D, 160x160) and load its weights."""
    from facenet_pytorch import InceptionResnetV1

    path = resolve_facenet_weights(model, weights_path, download)
    net = InceptionResnetV1(pretrained=None, classify=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFoundError(f"{model}: cannot load weights from {path}: {exc}") from None
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("logits.")]
    if missing or unexpected:
        raise WeightsNotFoundError(
            f"{model}: {path} is not an InceptionResnetV1 state dict "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return StandardizedFaceNet(net).eval()
