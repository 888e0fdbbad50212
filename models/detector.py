"""MTCNN face detector on facenet-pytorch's shipped P/R/O-net weights (run by models.mtcnn), batched.

Frames of equal size go through the network as one batch; a detection scale below 1 runs the
detector on a downscaled copy (the cost is roughly proportional to pixels) and maps the boxes
and landmarks back to full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from models.detection import Detection, DetectorSettings


class MTCNNDetector:
    """Batched MTCNN returning per frame a list of :class:`Detection`."""

    def __init__(self, settings: DetectorSettings | None = None, device: str = "cpu") -> None:
        from models.mtcnn import load_nets

        self.settings = settings or DetectorSettings()
        self.device = torch.device(device)
        self.nets = load_nets(self.device)  # pnet/rnet/onet weights from facenet-pytorch's data folder

    def _frame_scale(self, shape: tuple[int, ...]) -> float:
        scale = self.settings.scale
        if self.settings.max_side:
            scale = min(scale, self.settings.max_side / max(shape[0], shape[1]))
        return min(scale, 1.0)

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect faces in RGB uint8 frames (H, W, 3); returns one list per frame."""
        from models.mtcnn import detect_faces

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
        for (shape, _), idx in groups.items():
            if min(shape[0], shape[1]) < 12:
                continue
            batch = torch.from_numpy(np.stack([small[i] for i in idx])).to(self.device)
            with torch.inference_mode():
                boxes, points = detect_faces(batch, self.nets, s.min_face_size, s.thresholds, s.factor)
            for j, i in enumerate(idx):
                sy = frames[i].shape[0] / small[i].shape[0]
                sx = frames[i].shape[1] / small[i].shape[1]
                results[i] = self._to_detections(np.asarray(boxes[j]), np.asarray(points[j]), sx, sy)
        return results

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
