"""Passive liveness of a detected face: is it a live person, or a print or screen held up to the camera?

Each model sees an 80x80 crop of the frame around the face box at its own scale (2.7x and 4.0x the box,
so the second includes the edges of a phone or sheet held up), cut the way the published models were
trained (Silent-Face-Anti-Spoofing's ``CropImage``): the window keeps its size and is shifted to stay
inside the frame rather than padded, and shrinks only when the frame is too small for it. The live
score is the mean of the models' softmax probabilities of class 1 ("live"); upstream's operating point
is 0.5 on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.registry import LIVENESS_MODELS, get_liveness_spec

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
DEFAULT_MODELS = ("minifasnet-v2", "minifasnet-v1se")
PUBLISHED_THRESHOLD = 0.5


@dataclass(frozen=True)
class LivenessSettings:
    """How liveness models are found and run; ``threads`` is ONNX Runtime's (torch keeps its global setting)."""

    runtime: str = "onnx"
    threads: int = 1
    weights_dir: Path | None = None  # a folder holding the published .pth files; None: cache, then download
    cache_dir: Path | None = None  # None: ~/.cache/facestream/liveness
    download: bool = True
    export_dir: Path | None = None  # ONNX exports; None: ~/.cache/facestream/exports
    threshold: float = PUBLISHED_THRESHOLD
    models: tuple[str, ...] = DEFAULT_MODELS

    def __post_init__(self) -> None:
        for name in ("weights_dir", "cache_dir", "export_dir"):  # a str from a config or CLI works too
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value).expanduser())
        if self.runtime not in ("onnx", "torch"):
            raise ValueError(f"liveness runtime must be 'onnx' or 'torch', got {self.runtime!r}")
        if self.threads < 0:
            raise ValueError(f"liveness threads must be >= 0 (0 = ONNX Runtime's default), got {self.threads}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"liveness threshold must be in [0, 1], got {self.threshold}")
        if not self.models:
            raise ValueError(f"liveness models must name at least one of {', '.join(LIVENESS_MODELS)}")
        for name in self.models:
            get_liveness_spec(name)


def crop_window(frame_h: int, frame_w: int, box: Box, scale: float) -> tuple[int, int, int, int]:
    """Upstream's crop window (inclusive pixel corners x1, y1, x2, y2) for ``box`` at ``scale``."""
    x1, y1, x2, y2 = box
    if not all(np.isfinite(v) for v in box):
        raise ValueError(f"face box must be finite numbers, got {box}")
    # The box as upstream's detector hands it over: integer corner, integer width and height.
    bx, by, bw, bh = int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1)
    if bw < 1 or bh < 1:
        raise ValueError(f"face box must have x2 > x1 and y2 > y1, got {box}")
    if frame_h < 2 or frame_w < 2:
        raise ValueError(f"frame of {frame_w}x{frame_h} pixels is too small for a liveness crop")
    scale = min((frame_h - 1) / bh, (frame_w - 1) / bw, scale)
    cx, cy = bx + bw / 2, by + bh / 2
    w, h = bw * scale, bh * scale
    left, top, right, bottom = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > frame_w - 1:
        left, right = left - (right - frame_w + 1), frame_w - 1.0
    if bottom > frame_h - 1:
        top, bottom = top - (bottom - frame_h + 1), frame_h - 1.0
    return int(left), int(top), int(right), int(bottom)


def liveness_crop(image: np.ndarray, box: Box, scale: float, size: int = 80) -> np.ndarray:
    """The ``size`` x ``size`` uint8 crop one model scores (same channel order as ``image``)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"liveness needs an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    x1, y1, x2, y2 = crop_window(image.shape[0], image.shape[1], box, scale)
    # Bilinear, OpenCV's default, as the published models were trained with.
    return cv2.resize(image[y1:y2 + 1, x1:x2 + 1], (size, size), interpolation=cv2.INTER_LINEAR)


class LivenessScorer:
    """The liveness models on one runtime: live scores for faces given as (RGB frame, box)."""

    def __init__(self, settings: LivenessSettings | None = None) -> None:
        from models.minifasnet import liveness_fn, load_minifasnet

        self.settings = s = settings or LivenessSettings()
        self.specs = tuple(get_liveness_spec(n) for n in s.models)
        self._fns = [liveness_fn(load_minifasnet(spec.name, s.weights_dir, s.cache_dir, s.download), spec.name,
                                 s.runtime, s.threads, s.export_dir) for spec in self.specs]
        self.runtime = s.runtime
        self.threshold = s.threshold

    @property
    def model_id(self) -> str:
        return "+".join(spec.name for spec in self.specs)

    def crops(self, image: np.ndarray, box: Box) -> list[np.ndarray]:
        """One crop per model, in model order."""
        return [liveness_crop(image, box, spec.scale, spec.input_size) for spec in self.specs]

    def probabilities(self, faces: Sequence[tuple[np.ndarray, Box]]) -> np.ndarray:
        """Every model's class probabilities per face: float32 (N faces, M models, classes)."""
        if not faces:
            return np.zeros((0, len(self.specs), self.specs[0].classes), dtype=np.float32)
        out = []
        for spec, fn in zip(self.specs, self._fns, strict=True):
            batch = np.stack([liveness_crop(img, box, spec.scale, spec.input_size) for img, box in faces])
            out.append(fn(batch.transpose(0, 3, 1, 2).astype(np.float32)))
        return np.stack(out, axis=1)

    def score_many(self, faces: Sequence[tuple[np.ndarray, Box]]) -> np.ndarray:
        """Live score per face in [0, 1] (float64, N): the models' mean probability of "live"."""
        probs = self.probabilities(faces)
        live = np.stack([probs[:, m, spec.live_class] for m, spec in enumerate(self.specs)], axis=1)
        return live.astype(np.float64).mean(axis=1)

    def score(self, image: np.ndarray, box: Box) -> float:
        """Live score of one face."""
        return float(self.score_many([(image, box)])[0])

    def is_live(self, score: float) -> bool:
        """The decision at the configured threshold (live when the score reaches it)."""
        return score >= self.threshold
