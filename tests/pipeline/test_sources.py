from __future__ import annotations

import itertools
import queue
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import REPO
from rtsp_helpers import RtspServer

from pipeline.sources import SourceSpec, VideoSource, parse_source
from pipeline.types import Frame, SourceStatus

HAMILTON = "face_recognition_examples/video/short_hamilton_clip.mp4"  # 640x360, 29.97 fps, 275 frames
OBAMA = "videos/known_identity/obama_speech.mp4"  # 844x614, 15 fps, 60 frames

Msg = Frame | SourceStatus


def _until(q: queue.Queue[Msg], done: Callable[[Msg], bool], timeout: float) -> list[Msg]:
    """Messages up to and including the first that satisfies ``done``; fails after ``timeout`` s."""
    got: list[Msg] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = q.get(timeout=0.05)
        except queue.Empty:
            continue
        got.append(msg)
        if done(msg):
            return got
    statuses = [(m.status, m.detail) for m in got if isinstance(m, SourceStatus)]
    pytest.fail(f"condition not met within {timeout} s; statuses seen: {statuses}")


def _is(status: str) -> Callable[[Msg], bool]:
    return lambda m: isinstance(m, SourceStatus) and m.status == status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_source_kinds(data_dir: Path) -> None:
    video = data_dir / HAMILTON
    f = parse_source(str(video))
    assert (f.id, f.uri, f.kind, f.live) == ("short_hamilton_clip", str(video), "file", False)
    assert parse_source(f"file://{video}", "stage").uri == str(video)
    assert parse_source("0") == SourceSpec("camera0", "0", "camera", True)
    assert parse_source(" 2 ", "door").id == "door"
    r = parse_source("rtsp://admin:s3cret@10.0.0.5:554/stream1/")
    assert (r.id, r.kind, r.live) == ("10.0.0.5:554/stream1", "rtsp", True)
    assert r.display_uri == "rtsp://admin:***@10.0.0.5:554/stream1/"
    assert "s3cret" not in repr(r)
    assert parse_source("https://cam.local/mjpg").kind == parse_source("http://cam.local/x.ts").kind == "http"


def test_parse_source_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(ValueError, match=f"^video file not found: {re.escape(str(missing))}$"):
        parse_source(str(missing))
    with pytest.raises(ValueError, match=r"^video file not found: "):
        parse_source(str(tmp_path))  # a directory is not a video file
    with pytest.raises(ValueError, match=r"^source URI is empty$"):
        parse_source("  ")
    with pytest.raises(ValueError, match=r"^unknown source scheme 'ftp://' in 'ftp://u:\*\*\*@h/x'"):
        parse_source("ftp://u:pw@h/x")
    with pytest.raises(ValueError, match=r"^rtsp:// URL has no host"):
        parse_source("rtsp:///live")
    with pytest.raises(ValueError, match=r"^source id must be non-empty"):
        parse_source("0", "front door")


def test_video_source_rejects_bad_arguments(data_dir: Path) -> None:
    spec = parse_source(str(data_dir / HAMILTON))
    with pytest.raises(ValueError, match=r"^max_frames must be >= 1, got 0$"):
        VideoSource(spec, queue.Queue(), max_frames=0)
    with pytest.raises(ValueError, match=r"^out must be a FIFO queue\.Queue, got LifoQueue$"):
        VideoSource(spec, queue.LifoQueue())
    with pytest.raises(ValueError, match=r"^need 0 < retry_initial_s <= retry_max_s"):
        VideoSource(spec, queue.Queue(), retry_initial_s=3.0)


def test_file_source_delivers_every_frame_in_order_under_back_pressure(data_dir: Path) -> None:
    q: queue.Queue[Msg] = queue.Queue(maxsize=2)
    src = VideoSource(parse_source(str(data_dir / HAMILTON)), q)
    src.start()
    frames: list[Frame] = []
    statuses: list[SourceStatus] = []
    deadline = time.monotonic() + 20
    while not (statuses and statuses[-1].status in ("eof", "error")):
        assert time.monotonic() < deadline, "file source did not finish in 20 s"
        msg = q.get(timeout=5)
        if isinstance(msg, SourceStatus):
            statuses.append(msg)
            continue
        frames.append(msg)
        time.sleep(0.002)  # a slow consumer
        if msg.index == 100:
            time.sleep(0.3)
            # The reader must be blocked: frame 100 in hand, 101-102 queued, 103 read and waiting.
            assert src.frames_read <= 104
    assert src.join(2)
    assert [s.status for s in statuses] == ["opened", "eof"]
    assert "width=640 height=360 fps=29.970" in statuses[0].detail
    assert [f.index for f in frames] == list(range(275))
    assert src.frames_read == 275 and src.frames_dropped == 0 and statuses[-1].frames_dropped == 0
    pts = np.array([f.pts for f in frames])
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)
    np.testing.assert_allclose(pts, np.arange(275) / 29.97, atol=0.02)
    assert all(not f.live and f.source_id == "short_hamilton_clip" for f in frames)
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8


def test_frames_are_rgb(data_dir: Path) -> None:
    q: queue.Queue[Msg] = queue.Queue()
    src = VideoSource(parse_source(str(data_dir / OBAMA)), q, max_frames=1)
    src.start()
    msgs = _until(q, _is("eof"), timeout=10)
    frames = [m for m in msgs if isinstance(m, Frame)]
    assert len(frames) == 1 and msgs[-1].detail == "max_frames=1 reached"
    cap = cv2.VideoCapture(str(data_dir / OBAMA), cv2.CAP_FFMPEG)
    ok, bgr = cap.read()
    cap.release()
    assert ok
    assert frames[0].image.shape == (614, 844, 3)
    np.testing.assert_array_equal(frames[0].image, bgr[:, :, ::-1])


def test_stop_mid_file_returns_promptly_while_blocked_on_a_full_queue(data_dir: Path) -> None:
    q: queue.Queue[Msg] = queue.Queue(maxsize=1)
    src = VideoSource(parse_source(str(data_dir / HAMILTON)), q)
    src.start()
    deadline = time.monotonic() + 10
    while src.frames_read < 1:  # 'opened' fills the queue; frame 0 then waits on the put
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    assert q.full() and src.frames_read == 1
    t0 = time.monotonic()
    src.stop()
    assert src.join(2)
    assert time.monotonic() - t0 < 2
    assert not src.is_alive()


def _bad_files(tmp_path: Path, data_dir: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of unusable file with the start of the one-line reason it must give."""
    clip = (data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4").read_bytes()
    out: dict[str, tuple[Path, str]] = {}
    out["missing"] = (tmp_path / "missing.mp4", "video file not found")
    (empty := tmp_path / "empty.mp4").write_bytes(b"")
    out["zero-byte"] = (empty, "empty file")
    (text := tmp_path / "notes.mp4").write_bytes(b"not a video at all" * 100)
    out["not a video"] = (text, "not a video")
    (cut := tmp_path / "cut.mp4").write_bytes(clip[: len(clip) // 3])
    out["truncated"] = (cut, "")  # moov at the end: FFmpeg cannot open it; at the start: ends early
    (codec := tmp_path / "codec.mp4").write_bytes(clip.replace(b"avc1", b"zzz1").replace(b"avcC", b"zzzC"))
    out["unsupported codec"] = (codec, "")
    (folder := tmp_path / "folder.mp4").mkdir()
    out["directory"] = (folder, "")
    return out


@pytest.mark.parametrize("kind", ["missing", "zero-byte", "not a video", "truncated", "unsupported codec",
                                  "directory"])
def test_unusable_file_reports_one_error_status_and_ends(tmp_path: Path, data_dir: Path, kind: str) -> None:
    path, reason = _bad_files(tmp_path, data_dir)[kind]
    q: queue.Queue[Msg] = queue.Queue()
    src = VideoSource(SourceSpec("bad", str(path), "file", False), q)
    src.start()
    assert src.join(10)
    statuses = [(m.status, m.detail) for m in q.queue if isinstance(m, SourceStatus)]
    assert statuses[-1][0] == "error", statuses
    assert [s for s, _ in statuses].count("error") == 1 and "eof" not in [s for s, _ in statuses]
    assert "\n" not in statuses[-1][1] and reason in statuses[-1][1], statuses
    assert src.failed == (src.frames_read == 0)


def test_unreadable_file_says_permission_denied(tmp_path: Path, data_dir: Path) -> None:
    import os
    import sys

    video = tmp_path / "locked.mp4"
    video.write_bytes((data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4").read_bytes())
    video.chmod(0)
    code = ("import queue, sys; from pipeline.sources import SourceSpec, VideoSource\n"
            f"q = queue.Queue(); s = VideoSource(SourceSpec('x', {str(video)!r}, 'file', False), q); s.start()\n"
            "s.join(10); print([m.detail for m in q.queue][-1])")
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:  # root reads any file: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.stdout.strip().endswith("permission denied"), out.stdout + out.stderr


def test_live_source_keeps_only_the_newest_frame(data_dir: Path) -> None:
    # A file read in real time with live=True forced behaves like a 30 fps camera.
    q: queue.Queue[Msg] = queue.Queue(maxsize=4)
    src = VideoSource(parse_source(str(data_dir / HAMILTON)), q, live=True, realtime=True)
    src.start()
    got: list[Frame] = []
    try:
        _until(q, _is("opened"), timeout=10)
        for _ in range(8):
            time.sleep(0.12)  # ~4 frames arrive while the consumer is busy
            assert sum(isinstance(m, Frame) for m in list(q.queue)) <= 1
            newest_read = src.frames_read - 1
            msg = q.get(timeout=2)
            assert isinstance(msg, Frame)
            # frames_read counts a frame just before it replaces the pending one: at most one newer exists.
            assert msg.index >= newest_read - 1
            got.append(msg)
    finally:
        src.stop()
        assert src.join(2)
    left = [m for m in q.queue if isinstance(m, Frame)]
    indices = [f.index for f in got]
    assert indices == sorted(set(indices)) and indices[-1] - indices[0] >= 20
    assert src.frames_dropped >= 15
    assert len(got) + len(left) + src.frames_dropped == src.frames_read  # every frame accounted for
    assert all(f.live and f.pts is None for f in got)


def test_live_source_reconnects_when_its_stream_ends(data_dir: Path) -> None:
    q: queue.Queue[Msg] = queue.Queue()
    src = VideoSource(parse_source(str(data_dir / OBAMA)), q, live=True)
    src.start()
    try:
        msgs = _until(q, lambda m: isinstance(m, Frame) and m.index >= 65, timeout=10)
    finally:
        src.stop()
        assert src.join(2)
    statuses = [(m.status, m.detail) for m in msgs if isinstance(m, SourceStatus)]
    assert statuses == [("opened", "width=844 height=614 fps=15.000 kind=file"),
                        ("error", "read failed"), ("reconnecting", "retry in 0.5 s"),
                        ("opened", "width=844 height=614 fps=15.000 kind=file")]
    gaps = [b.time - a.time for a, b in itertools.pairwise(msgs)
            if isinstance(a, SourceStatus) and a.status == "reconnecting"]
    assert gaps and 0.45 <= gaps[0] < 2.0


def test_unreachable_stream_backs_off_doubling_to_a_cap() -> None:
    q: queue.Queue[Msg] = queue.Queue()
    url = f"http://127.0.0.1:{_free_port()}/nothing"  # connection refused at once
    src = VideoSource(parse_source(url), q, retry_initial_s=0.05, retry_max_s=0.2)
    src.start()
    try:
        msgs = _until(q, lambda m: _is("reconnecting")(m) and m.detail == "retry in 0.2 s", timeout=10)
        msgs += _until(q, _is("reconnecting"), timeout=5)
    finally:
        src.stop()
        assert src.join(2)
    retries = [m.detail for m in msgs if isinstance(m, SourceStatus) and m.status == "reconnecting"]
    assert retries == ["retry in 0.05 s", "retry in 0.1 s", "retry in 0.2 s", "retry in 0.2 s"]
    assert all(m.detail == f"cannot open {url}" for m in msgs if isinstance(m, SourceStatus) and m.status == "error")
    assert not any(isinstance(m, Frame) for m in msgs)


def _frame_after(q: queue.Queue[Msg], last: int, timeout: float) -> list[Msg]:
    return _until(q, lambda m: isinstance(m, Frame) and m.index > last, timeout=timeout)


def test_rtsp_stream_reconnects_after_the_server_comes_back(data_dir: Path) -> None:
    """Kill GStreamer's RTSP server: 'reconnecting' within 2 s; restart it: frames within 5 s."""
    video, port = data_dir / HAMILTON, _free_port()
    q: queue.Queue[Msg] = queue.Queue(maxsize=8)
    server = RtspServer(port, {"/x": video})
    src = VideoSource(parse_source(server.url("/x"), "stage"), q, io_timeout_s=3.0, retry_initial_s=0.25,
                      retry_max_s=1.0)
    src.start()
    try:
        first = _until(q, lambda m: isinstance(m, Frame) and src.frames_read >= 10, timeout=15)
        assert _is("opened")(first[0]) and "width=640 height=360" in first[0].detail
        server.kill()
        stalled = time.monotonic()
        down = _until(q, _is("reconnecting"), timeout=10)
        assert time.monotonic() - stalled < 2.0, "reconnecting was not reported within 2 s of the stall"
        assert [m.status for m in down if isinstance(m, SourceStatus)][-2:] == ["error", "reconnecting"]
        time.sleep(2.0)  # a few failed attempts while the server is down: the wait doubles up to its cap
        last = max(m.index for m in first + down if isinstance(m, Frame))
        server = RtspServer(port, {"/x": video})
        back = time.monotonic()
        again = _frame_after(q, last, timeout=10)
        assert time.monotonic() - back < 5.0
        waits = [float(m.detail.split()[2]) for m in down + again if _is("reconnecting")(m)]
        assert waits == sorted(waits) and max(waits) <= 1.0 and len(waits) >= 3, waits
        assert any(_is("opened")(m) for m in again)
        frame = again[-1]
        assert isinstance(frame, Frame) and frame.live and frame.pts is None and frame.image.shape == (360, 640, 3)
    finally:
        src.stop()
        assert src.join(5)
        server.kill()


def test_stall_watchdog_reopens_a_connected_but_silent_stream_and_others_carry_on(data_dir: Path) -> None:
    """A server frozen mid-stream (socket open, nothing sent) trips the watchdog after that source's own
    timeout; a second source on another server keeps delivering meanwhile."""
    video = data_dir / HAMILTON
    qa: queue.Queue[Msg] = queue.Queue(maxsize=8)
    qb: queue.Queue[Msg] = queue.Queue(maxsize=8)
    port_a = _free_port()
    port_b = next(p for p in iter(_free_port, None) if p != port_a)  # the OS may hand out the same port twice
    with RtspServer(port_a, {"/a": video}) as sa, RtspServer(port_b, {"/b": video}) as sb:
        a = VideoSource(parse_source(sa.url("/a"), "a"), qa, io_timeout_s=1.5, retry_initial_s=0.25, retry_max_s=1.0)
        b = VideoSource(parse_source(sb.url("/b"), "b"), qb, io_timeout_s=1.5)
        a.start()
        b.start()
        try:
            _until(qa, lambda m: isinstance(m, Frame) and a.frames_read >= 10, timeout=15)
            _until(qb, lambda m: isinstance(m, Frame) and b.frames_read >= 10, timeout=15)
            sa.pause()
            frozen, b_before = time.monotonic(), b.frames_read
            _until(qa, _is("error"), timeout=10)
            took = time.monotonic() - frozen
            assert 1.0 <= took < 3.5, f"watchdog fired after {took:.2f} s for a 1.5 s timeout"
            assert b.frames_read - b_before >= 20, "the other source stalled with the first"
            sa.resume()
        finally:
            a.stop()
            b.stop()
            assert a.join(5) and b.join(5)
