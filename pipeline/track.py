"""Track stage: greedy IoU association of detections with a source's tracks.

Track ids are stable per source; tracks are carried across frames the detector skipped and end
after ``max_age_s`` seconds unseen (or when the source ends). Ages and embedding times are in
seconds of the source's own time, not frames: a live source under load drops frames, and "15 frames
unseen" would then mean anything. The tracker also decides which faces to embed: a new track as soon
as its face is usable, then at most every ``embed_interval_s`` when the face is at least as good
(large, frontal) as most of what was seen, up to ``max_embeds`` faces a track.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.face_measures import face_quality, iou
from pipeline.stage import Stage
from pipeline.types import (
    DetectedFrame,
    Detection,
    EndedTrack,
    Frame,
    SourceStatus,
    TrackedFrame,
    TrackView,
    frame_time,
)


@dataclass
class _Track:
    track_id: int
    box: tuple[float, float, float, float]
    first_frame: int
    first_time: float
    last_frame: int
    last_time: float
    hits: int = 1
    embeds: int = 0
    next_embed: float = 0.0
    best_quality: float = 0.0
    probs: list[float] | None = None
    confirmed: bool = False
    skipped: dict[str, int] | None = None  # why faces were not embedded
    sized_from: float | None = None  # time of the first and last face big enough to embed
    sized_to: float = 0.0

    def ended(self) -> EndedTrack:
        why = None
        if self.embeds == 0 and self.skipped:
            why = max(self.skipped.items(), key=lambda kv: kv[1])[0]
        sized = 0.0 if self.sized_from is None else self.sized_to - self.sized_from
        return EndedTrack(self.track_id, self.first_frame, self.last_frame, self.first_time, self.last_time,
                          self.last_frame - self.first_frame + 1, why, round(sized, 3))


class IoUTracker:
    """Tracks of one source."""

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.0, embed_interval_s: float = 0.2,
                 min_embed_px: float = 32.0, min_quality: float = 0.2, confirm_hits: int = 3,
                 confirm_prob: float = 0.98, max_embeds: int = 12) -> None:
        if not 0.0 < iou_threshold < 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        if embed_interval_s < 0:
            raise ValueError(f"embed_interval_s must be >= 0, got {embed_interval_s}")
        if max_embeds < 1:
            raise ValueError(f"max_embeds must be >= 1, got {max_embeds}")
        self.max_embeds = max_embeds
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.embed_interval_s = embed_interval_s
        self.min_embed_px = min_embed_px
        self.min_quality = min_quality
        self.confirm_hits = confirm_hits
        self.confirm_prob = confirm_prob
        self.tracks: list[_Track] = []
        self._next_id = 1

    def update(self, frame: Frame, detections: tuple[Detection, ...] | None) -> TrackedFrame:
        t = frame_time(frame)
        matched: dict[int, Detection] = {}
        embed: list[int] = []
        if detections is not None:
            pairs = sorted(((iou(tr.box, d.box), ti, di) for ti, tr in enumerate(self.tracks)
                            for di, d in enumerate(detections)), reverse=True)
            used_t: set[int] = set()
            used_d: set[int] = set()
            for score, ti, di in pairs:
                if score < self.iou_threshold:
                    break
                if ti in used_t or di in used_d:
                    continue
                used_t.add(ti)
                used_d.add(di)
                tr, d = self.tracks[ti], detections[di]
                tr.box, tr.last_frame, tr.last_time = d.box, frame.index, t
                self._sized(tr, d, t)
                tr.hits += 1
                self._confirm(tr, d.prob)
                matched[tr.track_id] = d
            for di, d in enumerate(detections):
                if di not in used_d:
                    tr = _Track(self._next_id, d.box, frame.index, t, frame.index, t)
                    self._next_id += 1
                    self._sized(tr, d, t)
                    self._confirm(tr, d.prob)
                    self.tracks.append(tr)
                    matched[tr.track_id] = d
            for tr in self.tracks:
                d = matched.get(tr.track_id)
                if d is not None and tr.confirmed and self._should_embed(tr, d, t):
                    embed.append(tr.track_id)
        ended = [tr for tr in self.tracks if t - tr.last_time > self.max_age_s or t < tr.last_time]
        self.tracks = [tr for tr in self.tracks if tr not in ended]
        views = tuple(TrackView(tr.track_id, tr.box, matched.get(tr.track_id), tr.first_frame, tr.hits)
                      for tr in self.tracks if tr.confirmed)
        return TrackedFrame(frame, views, tuple(embed), tuple(tr.ended() for tr in ended if tr.confirmed))

    def _sized(self, tr: _Track, d: Detection, t: float) -> None:
        if min(d.width, d.height) >= self.min_embed_px:
            tr.sized_from = t if tr.sized_from is None else tr.sized_from
            tr.sized_to = t

    def _confirm(self, tr: _Track, prob: float) -> None:
        """A track counts (is embedded, reported) only after ``confirm_hits`` detections whose median
        probability reaches ``confirm_prob``: animals and textures fire MTCNN now and then at ~0.9-0.98,
        real faces at >= 0.99 frame after frame."""
        tr.probs = [*(tr.probs or []), prob][-15:]
        if not tr.confirmed and len(tr.probs) >= self.confirm_hits:
            tr.confirmed = float(np.median(tr.probs)) >= self.confirm_prob

    def _should_embed(self, tr: _Track, d: Detection, t: float) -> bool:
        q = face_quality(d)
        why = None
        if min(d.width, d.height) < self.min_embed_px:
            why = f"face too small (< {self.min_embed_px:g} px)"
        elif q < self.min_quality:
            why = "face turned away or too small to judge"
        if why is not None:
            tr.skipped = tr.skipped or {}
            tr.skipped[why] = tr.skipped.get(why, 0) + 1
            return False
        if tr.embeds >= self.max_embeds:
            return False
        if tr.embeds == 0 or (t >= tr.next_embed - 1e-6 and q >= 0.8 * tr.best_quality):
            tr.embeds += 1
            tr.next_embed = t + self.embed_interval_s
            tr.best_quality = max(tr.best_quality, q)
            return True
        return False

    def end_all(self) -> tuple[EndedTrack, ...]:
        ended = tuple(tr.ended() for tr in self.tracks if tr.confirmed)
        self.tracks = []
        return ended


class SceneCutDetector:
    """Flags a shot change: mean absolute difference of 32x18 grey thumbnails of consecutive frames.

    On the shared clips cuts score 26-30 and motion at most ~13 (99th percentile 16). The thumbnail is
    taken from every 4th pixel (a 1080p frame: 2 ms -> 0.1 ms); tests check the cuts found are the same."""

    def __init__(self, threshold: float = 20.0) -> None:
        self.threshold = threshold
        self.prev: np.ndarray | None = None

    def update(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        small = cv2.resize(image, (w // 4, h // 4), interpolation=cv2.INTER_NEAREST) if min(h, w) >= 72 else image
        thumb = cv2.resize(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (32, 18), interpolation=cv2.INTER_AREA)
        thumb = thumb.astype(np.float32)
        cut = self.prev is not None and float(np.abs(thumb - self.prev).mean()) > self.threshold
        self.prev = thumb
        return cut


class TrackStage(Stage):
    name = "track"
    accepts = (DetectedFrame,)

    def __init__(self, inq: queue.Queue[Any], outq: queue.Queue[Any], **tracker_args: Any) -> None:
        super().__init__(inq, outq)
        IoUTracker(**tracker_args)  # validate eagerly
        self.tracker_args = tracker_args
        self.trackers: dict[str, IoUTracker] = {}
        self.last_frame: dict[str, Frame] = {}

    def handle_failed(self, msg: Any) -> None:
        """Tracking failed on this frame: it goes on without tracks (they resume on the next one)."""
        if isinstance(msg, DetectedFrame):
            self.emit(TrackedFrame(msg.frame, (), (), ()))
        else:
            super().handle_failed(msg)

    def process(self, msg: DetectedFrame) -> None:
        src = msg.frame.source_id
        tr = self.trackers.get(src)
        if tr is None:
            tr = self.trackers[src] = IoUTracker(**self.tracker_args)
        cut = msg.scene_cut  # found by the detect stage, which rescans on a cut
        ended_by_cut = tr.end_all() if cut else ()
        self.last_frame[src] = msg.frame
        out = tr.update(msg.frame, msg.detections)
        if cut:
            out = TrackedFrame(out.frame, out.tracks, out.embed, ended_by_cut + out.ended, scene_cut=True)
        self.emit(out)

    def on_status(self, msg: SourceStatus) -> None:
        if msg.status in ("eof", "error", "reconnecting", "stopped") and msg.source_id in self.trackers:
            # The stream is gone: its tracks end with it.
            ended = self.trackers[msg.source_id].end_all()
            last = self.last_frame.get(msg.source_id)
            if ended and last is not None:
                self.emit(TrackedFrame(last, (), (), ended))
        self.emit(msg)
