"""The detection schedule on a real clip: full scans a few times a second, every frame between them
refreshed from crops, boxes as exact as a full scan's, schedules in seconds for live sources too."""

from __future__ import annotations

import queue
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.detection import DetectorSettings
from models.detector import MTCNNDetector
from pipeline.detect import DetectSchedule, DetectStage
from pipeline.face_measures import iou
from pipeline.types import DetectedFrame, Frame

OBAMA = Path("videos/known_identity/obama_speech.mp4")  # 60 frames at 15 frames/s, one face


@pytest.fixture(scope="module")
def obama_frames(data_dir: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(data_dir / OBAMA), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) == 60
    return frames


@pytest.fixture(scope="module")
def stream_detector() -> MTCNNDetector:
    return MTCNNDetector(DetectorSettings(40, min_face_in_frame=True, fast_resampling=True))


def _run(detector: MTCNNDetector, frames: list[Frame], schedule: DetectSchedule) -> tuple[DetectStage, list]:
    out: queue.Queue = queue.Queue()
    stage = DetectStage(queue.Queue(), out, detector, schedule)
    for f in frames:
        stage.handle(f)
    got = []
    while not out.empty():
        got.append(out.get_nowait())
    assert all(isinstance(m, DetectedFrame) for m in got) and len(got) == len(frames)
    return stage, got


def test_file_scans_twice_a_second_and_refreshes_every_frame_exactly(obama_frames, stream_detector) -> None:
    frames = [Frame("obama", i, i / 15.0, 0.0, img, False) for i, img in enumerate(obama_frames)]
    stage, got = _run(stream_detector, frames, DetectSchedule(0.5, 0.0))
    # 4 s of video: scans at 0, 0.53, 1.07, ... 3.73 s -> 8 of 60 frames. Every frame after the first is
    # refreshed from the faces of the one before (on scan frames too: a face one scan misses keeps its box).
    assert stage.frames_detected == 8
    assert stage.frames_refreshed == 59
    assert [len(m.detections) for m in got] == [1] * 60  # the face is never lost between scans
    for i in (5, 23, 47, 59):  # refreshed frames: as exact as a full scan of the same frame
        full = stream_detector.detect([obama_frames[i]])[0]
        assert len(full) == 1
        assert iou(got[i].detections[0].box, full[0].box) > 0.85
        assert np.abs(got[i].detections[0].landmarks - full[0].landmarks).max() < 0.06 * full[0].width


def test_live_schedule_follows_the_clock_not_the_frame_index(obama_frames, stream_detector) -> None:
    """A live source's index counts dropped frames (here 50 per delivered frame): the scans still come
    twice a second of capture time, and refreshes carry the face in between."""
    frames = [Frame("cam", 50 * i, None, 1_000.0 + i / 15.0, img, True) for i, img in enumerate(obama_frames[:30])]
    stage, got = _run(stream_detector, frames, DetectSchedule(0.5, 0.0))
    assert stage.frames_detected == 4  # 2 s of capture time
    assert all(m.detections is not None and len(m.detections) == 1 for m in got)


def test_refresh_interval_carries_frames_between_refreshes(obama_frames, stream_detector) -> None:
    frames = [Frame("obama", i, i / 15.0, 0.0, img, False) for i, img in enumerate(obama_frames[:15])]
    stage, got = _run(stream_detector, frames, DetectSchedule(1.0, 0.2))
    # One scan at 0 s; refreshes every 0.2 s (3 frames) after it; the frames between carry (None).
    assert stage.frames_detected == 1
    assert [m.detections is not None for m in got] == [i % 3 == 0 for i in range(15)]


def test_schedule_rejects_negative_intervals() -> None:
    with pytest.raises(ValueError, match="scan_interval_s must be >= 0"):
        DetectSchedule(-1.0)
    with pytest.raises(ValueError, match="refresh_interval_s must be >= 0"):
        DetectSchedule(0.5, -0.1)


def test_background_scans_never_hold_a_frame_and_their_faces_join_the_next_frames(obama_frames,
                                                                                  stream_detector) -> None:
    """Live frames with ``background_scans``: every frame leaves at once and in order, the scan runs on its
    own thread, and the face it finds on the first frame is refreshed on the frames after it."""
    import threading
    import time

    out: queue.Queue = queue.Queue()
    stage = DetectStage(queue.Queue(), out, stream_detector, DetectSchedule(0.5, 0.0), background_scans=True)
    frames = [Frame("cam", i, None, 1_000.0 + i / 15.0, img, True) for i, img in enumerate(obama_frames[:30])]
    scan_threads: set[str] = set()
    real_detect = stream_detector.detect

    def detect(images):
        scan_threads.add(threading.current_thread().name)
        return real_detect(images)

    stream_detector.detect = detect
    try:
        def scans_done() -> None:  # the frames come faster than real time: let each scan finish, as 66 ms would
            deadline = time.monotonic() + 30
            while stage._inflight and time.monotonic() < deadline:
                time.sleep(0.005)

        stage.handle(frames[0])
        first = out.get_nowait()  # emitted before its scan is done: nothing known yet, carried
        assert first.frame is frames[0] and first.detections is None
        for f in frames[1:]:
            scans_done()
            stage.handle(f)
        stage.flush()
    finally:
        stream_detector.detect = real_detect
    got = [first] + [out.get_nowait() for _ in range(out.qsize())]
    assert [m.frame.index for m in got] == list(range(30))  # in order, none held back, none twice
    assert all(m.detections is not None and len(m.detections) == 1 for m in got[1:])  # the scan's face, refreshed
    assert scan_threads and all(n.startswith("detect-scan") for n in scan_threads)
    assert stage.scans_in_background == 4 and stage.frames_detected == 4  # twice a second of capture time
    full = stream_detector.detect([obama_frames[20]])[0]
    assert iou(got[20].detections[0].box, full[0].box) > 0.85  # refreshed boxes stay exact
