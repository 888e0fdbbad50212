from __future__ import annotations

import contextlib
import itertools
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

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


def test_unreadable_file_reports_an_error_and_ends(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    q: queue.Queue[Msg] = queue.Queue()
    src = VideoSource(parse_source(str(bad)), q)
    src.start()
    assert src.join(10)
    msgs = list(q.queue)
    assert [(m.status, m.detail) for m in msgs if isinstance(m, SourceStatus)] == [
        ("error", f"cannot open {bad}")]
    assert src.frames_read == 0


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


class _RtspServer:
    """Just enough RTSP (OPTIONS, DESCRIBE, SETUP over TCP, PLAY) in front of ffmpeg's RTP output.

    ffmpeg's own RTSP muxer only pushes to a server, so this plays the server: ffmpeg loops the clip
    in real time as RTP over UDP to 127.0.0.1 and the packets are relayed interleaved on the RTSP
    connection.
    """

    def __init__(self, ffmpeg: str, video: Path, port: int, workdir: Path) -> None:
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # absorbs ffmpeg's sender reports
        self.rtcp.bind(("127.0.0.1", 0))
        sdp = workdir / f"stream-{port}-{time.monotonic_ns()}.sdp"
        url = f"rtp://127.0.0.1:{self.rtp.getsockname()[1]}?rtcpport={self.rtcp.getsockname()[1]}&pkt_size=1200"
        self.proc = subprocess.Popen([ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                                      "-i", str(video), "-an", "-c:v", "copy", "-f", "rtp", "-sdp_file", str(sdp),
                                      url], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not (sdp.is_file() and "a=rtpmap" in sdp.read_text()):
            assert time.monotonic() < deadline and self.proc.poll() is None, "ffmpeg did not start streaming"
            time.sleep(0.05)
        text = re.sub(r"(?m)^m=video \d+", "m=video 0", sdp.read_text().strip())
        self.sdp = (text + "\r\na=control:trackID=0\r\n").replace("\r\n", "\n").replace("\n", "\r\n")
        self.clients: list[socket.socket] = []  # connections that sent PLAY
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._relay, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _relay(self) -> None:
        while True:
            try:
                pkt = self.rtp.recv(65536)
            except OSError:
                return
            with self.lock:
                for c in list(self.clients):
                    try:
                        c.sendall(b"$\x00" + len(pkt).to_bytes(2, "big") + pkt)
                    except OSError:
                        self.clients.remove(c)

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with contextlib.suppress(OSError):  # the client left or the server stopped
            while data := conn.recv(65536):
                buf += data
                while buf:
                    if buf[:1] == b"$":  # the client's interleaved RTCP: skip it
                        size = 4 + int.from_bytes(buf[2:4], "big") if len(buf) >= 4 else 1 << 30
                        if len(buf) < size:
                            break
                        buf = buf[size:]
                        continue
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head, buf = buf[:end].decode(), buf[end + 4:]
                    self._reply(conn, head)

    def _reply(self, conn: socket.socket, head: str) -> None:
        method, url = head.split()[:2]
        cseq = re.search(r"(?im)^CSeq:\s*(\d+)", head)
        lines, body, status = [f"CSeq: {cseq.group(1) if cseq else 0}"], "", "200 OK"
        if method == "OPTIONS":
            lines.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            lines += [f"Content-Base: {url.rstrip('/')}/", "Content-Type: application/sdp"]
            body = self.sdp
        elif method == "SETUP" and "RTP/AVP/TCP" in head:
            lines += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 4242;timeout=60"]
        elif method == "SETUP":
            status = "461 Unsupported Transport"
        else:
            lines.append("Session: 4242")
        if body:
            lines.append(f"Content-Length: {len(body.encode())}")
        with self.lock:
            conn.sendall((f"RTSP/1.0 {status}\r\n" + "".join(f"{x}\r\n" for x in lines) + "\r\n" + body).encode())
            if method == "PLAY" and conn in self.conns:
                self.clients.append(conn)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        with self.lock:
            socks, self.clients = [*self.conns, self.listener, self.rtp, self.rtcp], []
        for s in socks:  # shutdown wakes the threads blocked on them and sends the client a FIN
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_rtsp_stream_reconnects_after_the_server_comes_back(data_dir: Path, tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not on PATH: it is needed to serve an RTSP stream")
    video, port = data_dir / HAMILTON, _free_port()
    q: queue.Queue[Msg] = queue.Queue(maxsize=8)
    server = _RtspServer(ffmpeg, video, port, tmp_path)
    src = VideoSource(parse_source(f"rtsp://127.0.0.1:{port}/x", "stage"), q, io_timeout_s=3.0)
    src.start()
    try:
        first = _until(q, lambda m: isinstance(m, Frame) and src.frames_read >= 10, timeout=15)
        assert _is("opened")(first[0]) and "width=640 height=360" in first[0].detail
        server.stop()
        down = _until(q, _is("reconnecting"), timeout=10)
        assert [m.status for m in down if isinstance(m, SourceStatus)][-2:] == ["error", "reconnecting"]
        last = max(m.index for m in first + down if isinstance(m, Frame))
        server = _RtspServer(ffmpeg, video, port, tmp_path)
        back = time.monotonic()
        again = _until(q, lambda m: isinstance(m, Frame) and m.index > last, timeout=10)
        assert time.monotonic() - back < 5.0
        assert any(_is("opened")(m) for m in again)
        frame = again[-1]
        assert isinstance(frame, Frame) and frame.live and frame.pts is None and frame.image.shape == (360, 640, 3)
    finally:
        src.stop()
        assert src.join(5)
        server.stop()
