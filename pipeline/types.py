"""Typed messages passed between stages; never dicts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One face found by the detector, in the coordinates of the full-resolution frame."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    prob: float
    landmarks: np.ndarray  # (5, 2) float32: left eye, right eye, nose, left mouth, right mouth

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``pts`` is the presentation time in seconds for files; live sources
    carry their capture time (epoch seconds) in ``capture_time`` and ``pts`` None."""

    source_id: str
    index: int
    pts: float | None
    capture_time: float
    image: np.ndarray  # RGB uint8 (H, W, 3)
    live: bool


@dataclass(frozen=True)
class SourceStatus:
    """A change in a source's state: opened, eof, error, reconnecting."""

    source_id: str
    status: str
    detail: str
    time: float
    frames_read: int
    frames_dropped: int
