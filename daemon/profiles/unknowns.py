"""Unknown visitors, live: each track that is reported unknown becomes an appearance of a visitor.

Two moments, one visitor. ``face.unknown`` is published when the track is confirmed unknown, often seconds
before it ends; the event carries ``visitor`` (the id), so the track is assigned then, on the quality-
weighted mean of its judgeable faces so far, with its best face so far (``visitor_appearances``: how
often that visitor has been seen, this time included, so 2 or more is a stranger who came back). When the
track ends, that same appearance is given the whole track's mean and best face; its visitor is not changed
(the id an event carried stays true). A track later named (the gallery changed under it) keeps its appearance until it
expires or the visitor is erased or enrolled.

This part is both an annotator (it runs before a frame's events go out, so ``face.unknown`` can carry the
id) and an observer (after them, to forget ended tracks). Its work is small: a crop copy when a track's
face improves, a JPEG and one SQLite transaction per unknown track.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from daemon.stores.unknowns import UnknownStore, default_location, open_unknowns
from pipeline.types import FaceEmbedding, Frame, MatchedFrame

log = structlog.get_logger(__name__)
DAY = 86400.0
MAX_SIDE = 400  # a stored face's longest side in pixels (the face itself then about half of it)


@dataclass
class _Track:
    weighted: np.ndarray | None = None
    best_quality: float = -1.0
    best_crop: np.ndarray | None = None
    visitor: str | None = None
    appearance: int | None = None
    appearances: int = 0  # the visitor's, this one included
    first_seen: float = 0.0

    def mean(self) -> np.ndarray | None:
        if self.weighted is None:
            return None
        n = float(np.linalg.norm(self.weighted))
        return (self.weighted / n).astype(np.float32) if n > 0 else None


def face_crop(image: np.ndarray, box: tuple[float, ...], margin: float) -> np.ndarray:
    """The face with ``margin`` of its size on each side (a detector finds it again), at most MAX_SIDE px."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box[:4]
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    a, b = max(0, int(x1 - mx)), max(0, int(y1 - my))
    c, d = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    crop = image[b:d, a:c]
    side = max(crop.shape[:2], default=0)
    if side > MAX_SIDE:
        s = MAX_SIDE / side
        return cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
    return crop.copy()  # never a view: the frame's buffer goes back to the pool


def jpeg(rgb: np.ndarray | None) -> bytes | None:
    if rgb is None or rgb.size == 0:
        return None
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes() if ok else None


class UnknownVisitors:
    """Annotator and observer of the events stage (``Daemon.add_annotator`` and ``add_observer``)."""

    def __init__(self, store: UnknownStore, threshold: Callable[[], float], judgeable: Callable[[FaceEmbedding], bool],
                 keep_days: float = 7.0, crop_margin: float = 0.5, expire_every_s: float = 3600.0) -> None:
        self.store, self.threshold, self.judgeable = store, threshold, judgeable
        self.keep_days, self.crop_margin, self.expire_every_s = keep_days, crop_margin, expire_every_s
        self._tracks: dict[tuple[str, int], _Track] = {}
        self._named: set[tuple[str, int]] = set()
        self._ended: list[tuple[str, int]] = []
        self._last_expiry = 0.0
        self.owns_store = True  # False once the HTTP API serves it: the server closes it after its last request
        self.expire()

    def expire(self) -> int:
        self._last_expiry = time.monotonic()
        n = self.store.expire(time.time() - self.keep_days * DAY)
        if n:
            log.info("unknowns_expired", appearances=n, keep_days=self.keep_days)
        return n

    # ---- before the frame's events -------------------------------------------------------------------
    def annotate(self, msg: MatchedFrame) -> None:
        frame = msg.tracked.frame
        src = frame.source_id
        for d in msg.decisions:
            if d.claimed is not None:
                self._named.add((src, d.track_id))
                self._tracks.pop((src, d.track_id), None)
        for e in msg.embeddings:
            key = (src, e.track_id)
            if key not in self._named and self.judgeable(e):
                self._add(key, frame, e)
        for d in msg.decisions:
            if d.unknown:
                self._assign((src, d.track_id), frame)
        for s in msg.ended:
            key = (src, s.ended.track_id)
            if s.newly_unknown:
                self._assign(key, frame)
            if s.decision == "unknown":
                self._finish(key)
            self._ended.append(key)
        if time.monotonic() - self._last_expiry >= self.expire_every_s:
            self.expire()

    def _add(self, key: tuple[str, int], frame: Frame, e: FaceEmbedding) -> None:
        t = self._tracks.setdefault(key, _Track(first_seen=frame.capture_time))
        v = np.asarray(e.vec, np.float64) * max(float(e.quality), 1e-3)  # the weight the track's judge gives it
        t.weighted = v if t.weighted is None else t.weighted + v
        if e.quality > t.best_quality:
            t.best_quality = float(e.quality)
            t.best_crop = face_crop(frame.image, e.detection.box, self.crop_margin)

    def _assign(self, key: tuple[str, int], frame: Frame) -> None:
        t = self._tracks.get(key)
        vec = t.mean() if t else None
        if t is None or vec is None or t.visitor is not None:
            return
        try:
            t.visitor, t.appearance, t.appearances = self.store.assign(vec, self.threshold(), key[0], t.first_seen,
                                                        t.best_quality, jpeg(t.best_crop))
        except Exception as exc:  # a full disk or a locked file loses a visitor, never a frame
            log.error("unknowns_store_failed", error=str(exc)[:300])

    def _finish(self, key: tuple[str, int]) -> None:
        t = self._tracks.get(key)
        vec = t.mean() if t else None
        if t is None or vec is None or t.appearance is None:
            return
        try:
            self.store.update(t.appearance, vec, time.time(), t.best_quality, jpeg(t.best_crop))
        except Exception as exc:
            log.error("unknowns_store_failed", error=str(exc)[:300])

    def fields(self, source_id: str, track_id: int) -> dict[str, Any]:
        t = self._tracks.get((source_id, track_id))
        if t is None or t.visitor is None:
            return {}
        return {"visitor": t.visitor, "visitor_appearances": t.appearances}

    # ---- after them ------------------------------------------------------------------------------------
    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        for key in self._ended:
            self._tracks.pop(key, None)
            self._named.discard(key)
        self._ended.clear()

    def source_ended(self, source_id: str) -> None:
        for key in [k for k in self._tracks if k[0] == source_id]:
            del self._tracks[key]
        self._named = {k for k in self._named if k[0] != source_id}

    def close(self) -> None:
        if self.owns_store:
            self.store.close()


def unknowns_location(settings: Any, gallery: Path | str | None) -> Path | None:
    """Where the visitors are kept for this run, None when they are not; a ValueError of one line when
    ``[unknowns]`` asks for what this gallery cannot have (checked before the daemon opens any file)."""
    from pipeline.gallery.store import is_url

    u = settings.unknowns
    if gallery is None:
        if u.enabled:
            raise ValueError("unknowns.enabled: unknown visitors need a gallery (--gallery FILE)")
        return None
    if not u.active(is_url(gallery)):
        return None
    return Path(u.path) if u.path is not None else default_location(Path(gallery))


def attach_unknowns(daemon: Any, create: bool = True) -> UnknownVisitors | None:
    """Give ``daemon`` (``facestream run``) its unknown visitors when ``[unknowns]`` and the gallery allow;
    ``create``: a new store may be made (``serve``, which sees no track, only opens one that exists)."""
    s = daemon.settings
    path = unknowns_location(s, daemon.gallery_path)
    if path is None:
        return None
    if not create and not path.exists():
        return None
    store = open_unknowns(path, s.unknowns.max_faces)
    fixed = s.unknowns.same_person_threshold
    gate = daemon.face_gate

    part = UnknownVisitors(store, (lambda: fixed) if fixed is not None else (lambda: daemon.gallery_state().threshold),
                           lambda e: gate.reject(e) is None, s.unknowns.keep_days, s.unknowns.crop_margin)
    daemon.add_annotator(part)
    daemon.add_observer(part)
    return part
