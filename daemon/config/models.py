"""``[detector]`` and ``[embedder]``: the face detector's and the embedding model's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from daemon.config.common import existing_file
from models.detection import DetectorSettings
from models.registry import EMBEDDERS, RUNTIMES

_D = DetectorSettings()


def _check_device(v: str) -> str:
    if v != "cpu" and not (v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit())):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {v!r}")
    return v


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_face_size: int = Field(_D.min_face_size, ge=8, description="Smallest face side in pixels MTCNN "
                               "searches for (smaller is slower).")
    thresholds: tuple[float, float, float] = Field(
        _D.thresholds, description="P-, R- and O-net score thresholds of MTCNN's three stages.")
    min_prob: float = Field(_D.min_prob, ge=0.0, le=1.0, description="Final detection probability a face must "
                            "reach.")
    factor: float = Field(_D.factor, gt=0.0, lt=1.0, description="Scale step of MTCNN's image pyramid.")
    scale: float = Field(_D.scale, gt=0.0, le=1.0, description="Detect on a copy downscaled by this factor.")
    max_side: int = Field(1600, ge=0, description="Stills: downscale for detection so the longest side is at "
                          "most this many pixels (0 = never); alignment still uses full resolution.")
    runtime: Literal["onnx", "torch"] = Field("onnx", description="Runtime of MTCNN's networks on the CPU (ONNX "
                                              "Runtime is ~2x faster; a CUDA device always runs torch).")
    stream_min_face_size: int = Field(40, ge=12, description="Streams: smallest face side, in pixels of the frame, "
                                      "the full-frame scan looks for; its first pyramid level is a copy downscaled "
                                      "by 12/this (0.3x at 40), so this sets the scan's cost (faces below "
                                      "pipeline.min_embed_px are never named; smaller ones only cost time).")
    scan_interval_s: float = Field(0.5, ge=0, description="Streams: seconds between full-frame scans of a source "
                                   "(0 = every frame); a new face is found at most this late.")
    refresh_interval_s: float = Field(0.06, ge=0, description="Streams: seconds between refreshes of known faces "
                                      "from crops around them (0 = every frame; 0.06 = every frame up to ~16 "
                                      "frames/s, every other frame of a 25-30 frames/s source).")
    batch: int = Field(4, ge=1, description="Live frames of different sources detected in one call.")
    background_scans: bool = Field(True, description="Streams: run a live frame's full scan on a second thread "
                                   "while the other cameras' frames are refreshed (a scan outlasts the time between "
                                   "two frames; inline, it made the other cameras' frames go stale). Files are "
                                   "always scanned inline, in order.")
    device: str = Field("cpu", description="'cpu' or 'cuda' / 'cuda:N': MTCNN on ONNX Runtime's CUDA execution "
                        "provider (the [gpu] extra) or, with runtime 'torch', on torch's CUDA device.")
    allow_cpu_fallback: bool = Field(
        False, description="Run the detector on the CPU when CUDA was asked for but is missing, instead of stopping.")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _check_device(v)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0.0 <= t <= 1.0 for t in v):
            raise ValueError(f"each threshold must be between 0 and 1, got {list(v)}")
        return v

    def to_settings(self) -> DetectorSettings:
        return DetectorSettings(self.min_face_size, tuple(self.thresholds), self.min_prob, self.factor,
                                self.scale, self.max_side)


class EmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("dlib-resnet-v1", description="Embedding model: " + ", ".join(EMBEDDERS) + ".")
    runtime: Literal["torch", "torchscript", "onnx"] = Field(
        "onnx", description="Inference runtime: " + ", ".join(RUNTIMES) + ".")
    device: str = Field("cpu", description="'cpu' or 'cuda' / 'cuda:N'.")
    allow_cpu_fallback: bool = Field(
        False, description="Run on the CPU when CUDA was asked for but is missing, instead of stopping.")
    flip: bool = Field(False, description="Average each face's embedding with its mirror image's.")
    weights_path: Path | None = Field(None, description="Weights file for the model (FaceNet state dict or "
                                      "dlib .dat); default: the packaged or cached file.")
    download: bool = Field(True, description="Allow downloading missing FaceNet weights.")
    batch_size: int = Field(32, ge=1, le=1024, description="Faces per inference call.")
    precision: Literal["fp32", "fp16"] = Field(
        "fp32", description="Weights and activations in float32 or float16 (fp16: about half the GPU memory and "
        "faster on CUDA; vectors stay comparable with a float32 gallery, LFW accuracy within 0.002).")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in EMBEDDERS:
            raise ValueError(f"unknown model {v!r}; choose one of {', '.join(EMBEDDERS)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _check_device(v)

    @field_validator("weights_path")
    @classmethod
    def _weights_exist(cls, v: Path | None) -> Path | None:
        # A configured file that is missing is a typo, not a request to download: fail at start.
        return existing_file(v, "weights file {} does not exist")
