"""Measures of one detected face that several stages and tools share: how much its embedding should weigh
(size x frontality), how sharp its aligned chip is, and how much two boxes overlap."""

from __future__ import annotations

import numpy as np

from models.detection import Detection


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_quality(det: Detection) -> float:
    """Size x frontality in [0, ~1]: the nose centred between the eyes means a frontal face."""
    lm = det.landmarks
    eye_mid = (lm[0] + lm[1]) / 2.0
    eye_dist = float(np.linalg.norm(lm[1] - lm[0]))
    if eye_dist <= 1e-3:
        return 0.0
    yaw = abs(float(lm[2][0] - eye_mid[0])) / eye_dist
    frontal = max(0.0, 1.0 - 2.0 * yaw)
    size = min(1.0, min(det.width, det.height) / 112.0)
    return frontal * size


def laplacian_blur(chip: np.ndarray) -> float:
    """Variance of the Laplacian of the aligned chip's grey image: low means blurred."""
    import cv2

    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
