"""What the detector returns and the knobs it takes: plain values, no torch or OpenCV, so settings
and messages can be imported by commands that never run a network."""

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
class DetectorSettings:
    """Detector knobs; the defaults find the faces in the shared photos and none in its no-face set."""

    min_face_size: int = 15
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)
    min_prob: float = 0.92
    factor: float = 0.709
    scale: float = 1.0
    max_side: int = 0  # when > 0, frames are downscaled so the longest side is at most this
    # True: min_face_size is in pixels of the full frame (streams), so downscaling keeps finding the same
    # faces; False: in pixels of the downscaled copy (stills, where faces scale with the photo).
    min_face_in_frame: bool = False
    # False: torch's area resampling, as facenet-pytorch (stills; the gallery and LFW figures were measured
    # with it). True: OpenCV INTER_AREA on uint8 with an octave pyramid (streams; 1080p pyramid 58 -> 4 ms).
    fast_resampling: bool = False

    def __post_init__(self) -> None:
        if self.min_face_size < 8:
            raise ValueError(f"min_face_size must be >= 8, got {self.min_face_size}")
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {self.factor}")
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three numbers in [0, 1], got {self.thresholds}")

    @property
    def ident(self) -> str:
        """A string that changes whenever detection output could change (for caches)."""
        t = ",".join(f"{x:g}" for x in self.thresholds)
        # Exact resampling gives facenet-pytorch 2.5.3's detections (the cache entries made with it stay valid).
        kind = "mtcnn-cv2" if self.fast_resampling else "mtcnn-fp253"
        return (f"{kind}:min{self.min_face_size}:t{t}:p{self.min_prob:g}:f{self.factor:g}"
                f":s{self.scale:g}:m{self.max_side}" + (":inframe" if self.min_face_in_frame else ""))
