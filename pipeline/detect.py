"""Detect stage: a full-frame MTCNN scan a few times a second, the known faces refreshed on every frame.

Scanning every frame is what makes the naive loop slow (1080p: ~0.3 s a frame on one core). Like the
NVRs that detect a few times a second, each source is scanned on a downscaled copy every
``scan_interval_s`` seconds; on the frames between, the faces already found are refreshed from crops
around them at full resolution (R-/O-net, ~1 ms a face), so boxes and landmarks stay exact without a
scan. A face that appears is found at the next scan, at most ``scan_interval_s`` later; a shot cut
triggers a scan at once. Schedules run in seconds (media time for files, capture time for live
sources), never frame counts: a live source's frame index counts the frames it dropped.

A file is processed frame by frame in order, so analysing it twice gives identical detections. Live
frames are processed at once, batched with the live frames of other sources already waiting. With
``background_scans``, a live frame's scan (40-80 ms at 720p) runs on a second thread and the frame itself
goes on at once, refreshed like any other: done inline, a scan outlasted the 66 ms between two frames of a
15 frames/s camera, and every other camera's waiting frame went stale (4 x 720p: 6-10 % dropped). The
faces the scan finds join the source's known faces when it is done and are refreshed on its next frame, so
a new face is reported one scan's time later (tens of ms, against the half second between scans); frames
still leave in order, and none waits for a scan.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from models.detector import MTCNNDetector
from pipeline.face_measures import iou
from pipeline.stage import Stage
from pipeline.track import SceneCutDetector
from pipeline.types import DetectedFrame, Detection, Frame, SourceStatus, frame_time

_EPS = 1e-6  # frame times are sums of float steps: 0.6 - 0.4 < 0.2

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DetectSchedule:
    """When a source is scanned and refreshed, in seconds of its own time."""

    scan_interval_s: float = 0.5
    refresh_interval_s: float = 0.06
    scene_cut_threshold: float = 20.0

    def __post_init__(self) -> None:
        if self.scan_interval_s < 0:
            raise ValueError(f"scan_interval_s must be >= 0, got {self.scan_interval_s}")
        if self.refresh_interval_s < 0:
            raise ValueError(f"refresh_interval_s must be >= 0, got {self.refresh_interval_s}")


@dataclass
class _SourceState:
    faces: list[Detection] = field(default_factory=list)
    last_scan: float | None = None
    last_refresh: float | None = None
    cuts: SceneCutDetector | None = None


def merge(scanned: list[Detection], refreshed: list[Detection], same_iou: float = 0.5) -> list[Detection]:
    """A scan's faces, plus the refreshed faces it missed (a face can flicker out of one scan, or be
    smaller than the scan looks for); where both saw a face, the first list's box wins."""
    extra = [r for r in refreshed if all(iou(r.box, s.box) < same_iou for s in scanned)]
    return sorted(scanned + extra, key=lambda d: -d.area)


class DetectStage(Stage):
    name = "detect"
    accepts = (Frame,)

    def __init__(self, inq: queue.Queue[Any], outq: queue.Queue[Any], detector: MTCNNDetector,
                 schedule: DetectSchedule | None = None, batch: int = 4,
                 stopping: threading.Event | None = None, background_scans: bool = False) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        super().__init__(inq, outq)
        self.detector = detector
        self.schedule = schedule or DetectSchedule()
        self.batch = batch
        self.frames_detected = 0  # full-frame scans
        self.frames_refreshed = 0
        self.faces_refreshed = 0
        self.frames_skipped_on_stop = 0
        self.stopping = stopping or threading.Event()
        self._state: dict[str, _SourceState] = {}
        self._in_hand: list[Frame] = []
        self._live: set[str] = set()  # live sources seen, to spread their scans
        self._last_live_scan: float | None = None
        self.background_scans = background_scans
        self.scans_in_background = 0
        self._lock = threading.Lock()  # the per-source state: this thread and the scan thread
        self._scanner: ThreadPoolExecutor | None = None
        self._inflight: dict[str, Future[None]] = {}

    def on_status(self, msg: SourceStatus) -> None:
        with self._lock:  # a scan still running for the old stream finds its state gone and is let go
            if msg.status in ("eof", "error", "reconnecting", "stopped"):
                self._state.pop(msg.source_id, None)  # a reopened stream starts with a scan
                self._live.discard(msg.source_id)
        self.emit(msg)

    def flush(self) -> None:
        if self._scanner is not None:
            self._scanner.shutdown(wait=True)
            self._scanner = None

    def process(self, msg: Frame) -> None:
        if self.stopping.is_set():
            # The daemon is stopping: frames read but not yet processed are let go (they produce no
            # events), so a stop takes as long as the frames already past detection, not the queue.
            self.frames_skipped_on_stop += 1
            return
        frames = [msg]
        if msg.live:
            # Batch with live frames of other sources that are already waiting (no waiting for more).
            extra: list[Any] = []
            while len(extra) < self.batch - 1:
                try:
                    extra.append(self.inq.get_nowait())
                except queue.Empty:
                    break
            frames += [m for m in extra if isinstance(m, Frame) and m.live]
            # File frames, statuses and the shutdown sentinel go back to the loop, in their order.
            self.backlog.extend(m for m in extra if not (isinstance(m, Frame) and m.live))
        if self.background_scans and msg.live:
            with self._lock:
                self._process_live(frames)
        else:
            self._process(frames)

    def handle_failed(self, msg: Any) -> None:
        """Detection failed: the frames in hand go on undetected (tracks carry them); the next frame scans."""
        if isinstance(msg, Frame):
            for f in self._in_hand or [msg]:
                self._state.pop(f.source_id, None)
                self.emit(DetectedFrame(f, None))
            self._in_hand = []
        else:
            super().handle_failed(msg)

    def _plan(self, f: Frame) -> tuple[str, bool]:
        """What this frame gets: 'scan', 'refresh' or 'carry', and whether it starts a new shot."""
        st = self._state.get(f.source_id)
        if st is None:
            st = self._state[f.source_id] = _SourceState()
        s = self.schedule
        cut = False
        if s.scene_cut_threshold > 0:
            st.cuts = st.cuts or SceneCutDetector(s.scene_cut_threshold)
            cut = st.cuts.update(f.image)
        t = frame_time(f)
        if cut:
            st.faces = []  # faces of the last shot are not in this one
        due = cut or st.last_scan is None or t - st.last_scan >= s.scan_interval_s - _EPS or t < st.last_scan
        if due and f.live:
            self._live.add(f.source_id)
            # Live cameras started together stay in step, and scanning them all on one frame stalls every one
            # of them for a few scans' time (their newest frames go stale). Scans of live sources are spread
            # out: at most one per scan_interval_s / sources; a postponed source is refreshed meanwhile.
            gap = s.scan_interval_s / len(self._live)
            last = self._last_live_scan
            if not cut and last is not None and 0 <= t - last < gap - _EPS and st.last_scan is not None:
                due = False
            else:
                self._last_live_scan = t
        if due:
            st.last_scan = st.last_refresh = t
            return "scan", cut
        if st.faces and (st.last_refresh is None or t - st.last_refresh >= s.refresh_interval_s - _EPS):
            st.last_refresh = t
            return "refresh", cut
        return "carry", cut

    def _process_live(self, frames: list[Frame]) -> None:
        """A due scan goes to the scan thread and its frame on at once, refreshed (or carried) like the rest."""
        plans = []
        for f in frames:
            plan, cut = self._plan(f)
            if plan == "scan":
                if f.source_id not in self._inflight:
                    self._submit(f)
                st = self._state[f.source_id]
                plan = "refresh" if st.faces else "carry"
            plans.append((plan, cut))
        self._run(frames, plans)

    def _submit(self, f: Frame) -> None:
        if self._scanner is None:
            self._scanner = ThreadPoolExecutor(1, thread_name_prefix="detect-scan")
        self._inflight[f.source_id] = self._scanner.submit(self._scan_job, f, self._state[f.source_id])
        self.scans_in_background += 1

    def _scan_job(self, f: Frame, st: _SourceState) -> None:
        """On the scan thread: the faces in ``f`` that the source's known faces (refreshed since, on newer
        frames) do not already cover join them. Never raises: a failed scan is logged and counted."""
        t0 = time.perf_counter()
        try:
            found = self.detector.detect([f.image])[0]
        except Exception as exc:
            found = None
            self.error = exc
            log.exception("background_scan_failed", source=f.source_id)
        with self._lock:
            self.busy_s += time.perf_counter() - t0
            self._inflight.pop(f.source_id, None)
            if found is None:
                self.errors += 1
            elif self._state.get(f.source_id) is st:  # the stream did not end or reopen meanwhile
                self.frames_detected += 1
                st.faces = merge(list(st.faces), found)  # the newer, refreshed box wins where both saw a face

    def _process(self, frames: list[Frame]) -> None:
        self._run(frames, [self._plan(f) for f in frames])

    def _run(self, frames: list[Frame], plans: list[tuple[str, bool]]) -> None:
        self._in_hand = frames
        scan = [f for f, (p, _) in zip(frames, plans, strict=True) if p == "scan"]
        todo = [f for f, (p, _) in zip(frames, plans, strict=True) if p != "carry"]
        refresh = [f for f in todo if self._state[f.source_id].faces]
        refreshed = dict(zip(map(id, refresh), self.detector.refine(
            [f.image for f in refresh], [self._state[f.source_id].faces for f in refresh]), strict=True)) \
            if refresh else {}
        scanned = dict(zip(map(id, scan), self.detector.detect([f.image for f in scan]), strict=True)) if scan else {}
        self.frames_detected += len(scan)
        self.frames_refreshed += len(refresh)
        self.faces_refreshed += sum(len(self._state[f.source_id].faces) for f in refresh)
        for f, (plan, cut) in zip(frames, plans, strict=True):
            st = self._state[f.source_id]
            dets: tuple[Detection, ...] | None = None
            if plan != "carry":
                found = refreshed.get(id(f), [])
                if plan == "scan":
                    found = merge(scanned[id(f)], found)
                st.faces = list(found)
                dets = tuple(found)
            self.emit(DetectedFrame(f, dets, scene_cut=cut))
        self._in_hand = []
