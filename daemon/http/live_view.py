"""What each source shows now: its state, its latest frame and the tracks on it, for the HTTP API.

The events stage hands every matched frame to :meth:`LiveView.observe`; keeping the newest one per
source costs a reference, not a copy (a pooled frame buffer is reused only once nothing refers to it,
pipeline/frame_pool.py). Drawing and JPEG encoding happen only when a snapshot is asked for, in the
HTTP thread, on a frame scaled down to ``max_width`` first.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from pipeline.types import MatchedFrame


@dataclass
class FaceInView:
    """One track on the latest frame and the name its track claims (None: not named)."""

    track_id: int
    box: tuple[float, float, float, float]
    identity: str | None


@dataclass
class SourceView:
    """A source's state as the last ``source.status`` event gave it, and its newest frame."""

    source_id: str
    state: str = "starting"
    detail: str = ""
    since: float = field(default_factory=time.time)
    image: np.ndarray | None = None
    frame_index: int = -1
    frame_time: float = 0.0  # wall time the newest frame was done
    tracks: tuple[Any, ...] = ()  # the newest frame's tracks (immutable), named from ``claims`` on request
    claims: dict[int, str | None] = field(default_factory=dict)
    processed: deque[float] = field(default_factory=lambda: deque(maxlen=512))  # capture time of each frame done
    first_capture: float | None = None  # of the first frame done: the rate's window never starts before it


class LiveView:
    """Observer (frames) and sink (``source.status`` events) in one: the HTTP API reads it."""

    def __init__(self, source_ids: list[str]) -> None:
        self._lock = threading.Lock()
        self.sources: dict[str, SourceView] = {sid: SourceView(sid) for sid in source_ids}

    # ---- fed by the events stage -------------------------------------------------------------
    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        """Per frame: references and a copy of the small claims dict (the events stage changes its own)."""
        frame = msg.tracked.frame
        now = time.time()
        with self._lock:
            view = self.sources.setdefault(frame.source_id, SourceView(frame.source_id))
            view.image, view.frame_index, view.frame_time = frame.image, frame.index, now
            view.tracks, view.claims = msg.tracked.tracks, dict(claims)
            # Counted at the frame's capture time: frames handed on in a batch (several cameras' frames embedded
            # in one call) arrive together, and their arrival times would read as a burst of speed.
            view.processed.append(frame.capture_time)
            if view.first_capture is None:
                view.first_capture = frame.capture_time

    def source_ended(self, source_id: str) -> None:
        pass  # the last frame stays on show; the state comes with the status event

    def send(self, topic: str, body: dict[str, Any]) -> None:
        if topic != "source.status":
            return
        with self._lock:
            view = self.sources.setdefault(body["source"], SourceView(body["source"]))
            if view.state != body["status"]:
                view.since = time.time()
            view.state, view.detail = body["status"], body.get("detail", "")

    def close(self) -> None:
        pass

    # ---- read by the HTTP API ------------------------------------------------------------------
    @staticmethod
    def _faces(v: SourceView) -> list[FaceInView]:
        return [FaceInView(t.track_id, tuple(float(c) for c in t.box), v.claims.get(t.track_id))  # type: ignore[arg-type]
                for t in v.tracks]

    def status(self, source_id: str, window_s: float = 5.0) -> dict[str, Any]:
        """State, frames/s processed over the last ``window_s`` and the faces in view now."""
        now = time.time()
        with self._lock:
            v = self.sources[source_id]
            # Frames captured in the window and processed, over the window (cut at the first frame): a camera's
            # rate, whatever the bursts in which stages hand frames on.
            start = max(now - window_s, v.first_capture or now)
            recent = [t for t in v.processed if t >= start]
            fps = len(recent) / (now - start) if now - start > 0.1 else 0.0
            return {"id": v.source_id, "state": v.state, "detail": v.detail, "state_since": round(v.since, 3),
                    "fps": round(fps, 2), "frame": v.frame_index,
                    "last_frame_age_s": round(now - v.frame_time, 2) if v.frame_index >= 0 else None,
                    "faces": [{"track_id": f.track_id, "identity": f.identity, "box": [round(c, 1) for c in f.box]}
                              for f in self._faces(v)]}

    def snapshot(self, source_id: str, max_width: int) -> tuple[bytes, list[str | None]] | None:
        """JPEG of the newest frame with each track's box and name, and the names drawn; None before any frame.
        Raises KeyError for an unknown source."""
        with self._lock:
            v = self.sources[source_id]
            image, faces = v.image, self._faces(v)
        if image is None:
            return None
        h, w = image.shape[:2]
        scale = min(1.0, max_width / w)
        if scale < 1.0:  # scaled first: the colour conversion and drawing then touch the small copy only
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        for f in faces:
            x1, y1, x2, y2 = (round(c * scale) for c in f.box)
            color = (0, 200, 0) if f.identity else (0, 165, 255)
            cv2.rectangle(bgr, (x1, y1), (x2, y2), color, 2)
            label = f.identity or "unknown"
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
            top = max(th + 6, y1)
            cv2.rectangle(bgr, (x1, top - th - 6), (x1 + tw + 6, top), color, -1)
            cv2.putText(bgr, label, (x1 + 3, top - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return jpg.tobytes(), [f.identity for f in faces]
