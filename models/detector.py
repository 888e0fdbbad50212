"""MTCNN face detector on facenet-pytorch's shipped P/R/O-net weights (models.mtcnn_cascade), batched.

Frames of equal size go through the network as one batch; a detection scale below 1 runs the
detector on a downscaled copy (the cost is roughly proportional to pixels) and maps the boxes
and landmarks back to full resolution. :meth:`MTCNNDetector.refine` refreshes known faces from
crops at full resolution, which is what lets streams scan the whole frame only a few times a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from models.detection import Detection, DetectorSettings


class MTCNNDetector:
    """Batched MTCNN returning per frame a list of :class:`Detection`."""

    def __init__(self, settings: DetectorSettings | None = None, device: str = "cpu", runtime: str = "onnx",
                 threads: int = 1, export_dir: Path | None = None, allow_cpu_fallback: bool = False) -> None:
        from models.mtcnn import load_nets

        self.settings = settings or DetectorSettings()
        self.device = device
        # pnet/rnet/onet weights from facenet-pytorch's data folder
        self.nets = load_nets(runtime, device, threads, export_dir, allow_cpu_fallback)
        self.runtime = self.nets.runtime
        self.provider = self.nets.provider

    def _frame_scale(self, shape: tuple[int, ...]) -> float:
        scale = self.settings.scale
        if self.settings.max_side:
            scale = min(scale, self.settings.max_side / max(shape[0], shape[1]))
        return min(scale, 1.0)

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect faces in RGB uint8 frames (H, W, 3); returns one list per frame."""
        from models.mtcnn_cascade import detect_faces

        s = self.settings
        results: list[list[Detection]] = [[] for _ in frames]
        groups: dict[tuple[tuple[int, ...], float], list[int]] = {}
        small: list[np.ndarray] = []
        for i, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frame {i} must be an RGB uint8 array (H, W, 3), got {frame.dtype} "
                                 f"{frame.shape}")
            scale = self._frame_scale(frame.shape)
            if scale < 1.0:
                size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            small.append(frame)
            groups.setdefault((frame.shape, scale), []).append(i)
        for (shape, scale), idx in groups.items():
            if min(shape[0], shape[1]) < 12:
                continue
            batch = np.stack([small[i] for i in idx])
            min_size = max(12.0, s.min_face_size * scale) if s.min_face_in_frame else s.min_face_size
            boxes, points = detect_faces(batch, self.nets, min_size, s.thresholds, s.factor,
                                         octave_pyramid=s.fast_resampling, exact=not s.fast_resampling)
            for j, i in enumerate(idx):
                sy = frames[i].shape[0] / small[i].shape[0]
                sx = frames[i].shape[1] / small[i].shape[1]
                results[i] = self._to_detections(np.asarray(boxes[j]), np.asarray(points[j]), sx, sy)
        return results

    def refine(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Detection]]) -> list[list[Detection]]:
        """Where the faces ``faces[k]`` (found on an earlier frame) are on ``frames[k]`` now, from crops at full
        resolution; faces that fell below ``min_prob`` (left, turned away, occluded) are dropped."""
        from models.mtcnn_cascade import refine

        boxes = [np.asarray([d.box for d in fs], dtype=np.float64).reshape(-1, 4) for fs in faces]
        got_b, got_p = refine(list(frames), boxes, self.nets)
        return [self._to_detections(b, p, 1.0, 1.0) for b, p in zip(got_b, got_p, strict=True)]

    def _to_detections(self, boxes: np.ndarray, points: np.ndarray, sx: float,
                       sy: float) -> list[Detection]:
        out: list[Detection] = []
        if boxes.size == 0:
            return out
        for box, pts in zip(boxes, points, strict=True):
            prob = float(box[4])
            if prob < self.settings.min_prob:
                continue
            x1, y1, x2, y2 = (float(box[0] * sx), float(box[1] * sy), float(box[2] * sx), float(box[3] * sy))
            lm = (np.asarray(pts, dtype=np.float32).reshape(5, 2) * np.array([sx, sy], dtype=np.float32))
            out.append(Detection((x1, y1, x2, y2), prob, lm))
        out.sort(key=lambda d: -d.area)
        return out
