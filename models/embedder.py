"""One embedder interface over every family and runtime: aligned uint8 chips in, unit vectors out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.align import align_face, warp_chip
from models.detection import Detection
from models.paths import default_cache_dir
from models.registry import EmbedderSpec, get_spec, model_id_for
from models.runtime import Runner, make_runner

_PREDICTOR: list = []


def _shape_predictor():
    if not _PREDICTOR:
        from models.dlib_shape_predictor import ShapePredictor

        _PREDICTOR.append(ShapePredictor.load(cache_dir=default_cache_dir() / "models"))
    return _PREDICTOR[0]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class Embedder:
    """``embed(chips) -> float32 [N, D]``, L2-normalised; optional flip averaging."""

    def __init__(self, spec: EmbedderSpec, runner: Runner, flip: bool = False, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = spec
        self.runner = runner
        self.flip = flip
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def provider(self) -> str:
        """Where it actually runs: ONNX Runtime's execution provider, or torch's device."""
        return self.runner.provider

    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def template(self) -> np.ndarray:
        return self.spec.template

    @property
    def model_id(self) -> str:
        """Identifies the vectors this embedder produces (model version + flip option)."""
        return model_id_for(self.spec.name, self.flip)

    def align(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """The chip this model was trained on: dlib's own 5-point chip for dlib's network (its
        shape predictor refines MTCNN's landmarks), else MTCNN's points onto the template."""
        if self.spec.alignment == "dlib5":
            from models.dlib_shape_predictor import dlib_chip_transform, rect_from_mtcnn

            predictor = _shape_predictor()
            points = predictor.predict(image, rect_from_mtcnn(detection.box, detection.landmarks))
            return warp_chip(image, dlib_chip_transform(points, self.spec.input_size), self.spec.input_size)
        return align_face(image, detection.landmarks, self.spec.template, self.spec.input_size)

    def _run(self, x: np.ndarray) -> np.ndarray:
        outs = [self.runner(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return l2_normalize(np.concatenate(outs, axis=0))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Embed (N, S, S, 3) RGB uint8 chips of this model's input size."""
        s = self.spec.input_size
        if chips.ndim != 4 or chips.shape[1:] != (s, s, 3):
            raise ValueError(f"chips must have shape (N, {s}, {s}, 3), got {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
        out = self._run(x)
        if self.flip:
            out = l2_normalize(out + self._run(np.ascontiguousarray(x[..., ::-1])))
        return out


def load_embedder(name: str, runtime: str = "torch", device: str = "cpu", flip: bool = False,
                  weights_path: str | Path | None = None, allow_cpu_fallback: bool = False,
                  export_dir: Path | None = None, batch_size: int = 32, download: bool = True,
                  threads: int = 0, precision: str = "fp32") -> Embedder:
    """Load weights for ``name`` and wrap them in the requested runtime and precision (fp16 vectors stay
    comparable with a float32 gallery's: the model id is the same; LFW accuracy is checked to 0.002)."""
    spec = get_spec(name)
    module = spec.loader(weights_path, download)
    runner = make_runner(module, spec.name, spec.input_size, runtime, device, allow_cpu_fallback, export_dir,
                         threads, precision)
    return Embedder(spec, runner, flip=flip, batch_size=batch_size)
