"""Video sources: one capture thread per file, camera or stream, feeding a queue the pipeline owns.

A file is analysed deterministically: every decoded frame is delivered, in order, and a full queue
blocks the reader (back-pressure). A live source (camera, RTSP, HTTP) must never fall behind real
time: it keeps at most one frame of its own in the queue, always the newest, and counts the frames it
replaced as dropped. A live source whose stream fails reconnects with backoff until it is stopped.

RTSP/HTTP options: ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is process-global, so it is never set here. When
it is unset OpenCV already asks FFmpeg to prefer TCP for RTSP (``rtsp_flags=prefer_tcp``); the open and
read timeouts are set per capture with ``CAP_PROP_OPEN_TIMEOUT_MSEC``/``CAP_PROP_READ_TIMEOUT_MSEC``.
An operator who needs other FFmpeg options can still export the variable before starting the daemon.
"""

from __future__ import annotations

import math
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np
import structlog

from pipeline.frame_pool import FramePool
from pipeline.types import Frame, SourceStatus

SourceKind = Literal["file", "camera", "rtsp", "http"]
Message = Frame | SourceStatus

_SCHEMES: dict[str, SourceKind] = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http", "file": "file"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PUT_TICK_S = 0.05  # how often a blocked put re-checks stop()

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SourceSpec:
    """What to open. ``uri`` is a file path for files (``file://`` is unwrapped), the digits of a camera
    index, or the stream URL; it is left out of the repr so stream passwords do not reach logs."""

    id: str
    uri: str = field(repr=False)
    kind: SourceKind
    live: bool
    start_s: float | None = None  # a file's media fragment (``path#t=START,END``): read from START ...
    end_s: float | None = None  # ... up to the last frame before END (None: to the file's end)

    @property
    def display_uri(self) -> str:
        return redact(self.uri)


def redact(uri: str) -> str:
    """The URI with any password in its user-info replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def parse_source(uri: str, source_id: str | None = None) -> SourceSpec:
    """Classify ``uri`` and check what can be checked before opening: the scheme, a URL's host, and
    that a file exists. The default id is the file's stem, ``cameraN``, or the URL's host and path."""
    text = uri.strip()
    if not text:
        raise ValueError("source URI is empty")
    if source_id is not None and (not source_id or any(c.isspace() or not c.isprintable() for c in source_id)):
        raise ValueError(f"source id must be non-empty and without whitespace, got {source_id!r}")
    if text.isdigit():
        return SourceSpec(source_id or f"camera{int(text)}", text, "camera", True)
    m = _SCHEME.match(text)
    if m is None:
        return _file_spec(Path(text).expanduser(), source_id)
    scheme = m.group(1).lower()
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise ValueError(f"unknown source scheme {scheme + '://'!r} in {redact(text)!r}: "
                         "use a video file path, a camera index, rtsp://, http:// or https://")
    parts = urlsplit(text)
    if kind == "file":
        return _file_spec(Path(unquote(parts.path) + (f"#{parts.fragment}" if parts.fragment else "")), source_id)
    if not parts.hostname:
        raise ValueError(f"{scheme}:// URL has no host: {redact(text)!r}")
    default_id = parts.hostname + (f":{parts.port}" if parts.port else "") + parts.path.rstrip("/")
    return SourceSpec(source_id or default_id, text, kind, True)


def _file_spec(path: Path, source_id: str | None) -> SourceSpec:
    start = end = None
    if not path.is_file():  # a file actually named with '#' is that file; only then a fragment is looked for
        base, sep, fragment = str(path).rpartition("#t=")
        if not sep or not Path(base).is_file():
            raise ValueError(f"video file not found: {path}")
        path = Path(base)
        start, end = parse_fragment(fragment, str(path))
    default_id = "_".join(path.stem.split()) or "file"
    return SourceSpec(source_id or default_id, str(path), "file", False, start, end)


_SECONDS = r"(\d+(?:\.\d*)?|\.\d+)"
_FRAGMENT = re.compile(rf"^(?:npt:)?{_SECONDS}?(?:,{_SECONDS})?$")


def parse_fragment(text: str, path: str = "") -> tuple[float, float | None]:
    """``START,END`` of a W3C temporal media fragment (``#t=10,20``, ``#t=10``, ``#t=,20``), in seconds:
    (START, END or None). Why a fragment: a chunk of a long file is a source like any other (analyze's
    chunks), its frames numbered and timed as in the whole file."""
    m = _FRAGMENT.match(text.strip())
    start = float(m.group(1) or 0.0) if m and (m.group(1) or m.group(2)) else None
    end = float(m.group(2)) if m and m.group(2) else None
    if start is None or (end is not None and end <= start):
        raise ValueError(f"bad media fragment '#t={text}' on {path}: use #t=START,END or #t=START in seconds "
                         "with 0 <= START < END")
    return start, end


class VideoSource:
    """Reads one source on its own daemon thread and puts ``Frame``/``SourceStatus`` messages on ``out``.

    ``live`` overrides the spec (a file read as if it were a camera exercises the drop policy);
    ``realtime`` paces reads at the stream's fps, as a camera would deliver them; ``max_frames`` ends
    the source with an 'eof' status after that many frames. Frame indices keep counting across
    reconnects, so they stay unique per source. A file's media fragment (``spec.start_s``/``end_s``) is
    read from its start, its frames numbered and timed as in the whole file, to an 'eof' before its end.
    ``out`` must be a FIFO ``queue.Queue``: a live source replaces its pending frame under the queue's own
    lock, so a consumer never sees a stale frame.
    """

    def __init__(self, spec: SourceSpec, out: queue.Queue[Message], *, live: bool | None = None,
                 max_frames: int | None = None, realtime: bool = False, retry_initial_s: float = 0.5,
                 retry_max_s: float = 2.0, io_timeout_s: float = 5.0, open_timeout_s: float = 10.0,
                 loop: bool = False) -> None:
        if not isinstance(out, queue.Queue) or isinstance(out, queue.LifoQueue | queue.PriorityQueue):
            raise ValueError(f"out must be a FIFO queue.Queue, got {type(out).__name__}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if not 0 < retry_initial_s <= retry_max_s:
            raise ValueError(f"need 0 < retry_initial_s <= retry_max_s, got {retry_initial_s} and {retry_max_s}")
        if io_timeout_s <= 0:
            raise ValueError(f"io_timeout_s must be > 0, got {io_timeout_s}")
        if open_timeout_s <= 0:
            raise ValueError(f"open_timeout_s must be > 0, got {open_timeout_s}")
        self.spec = spec
        self.live = spec.live if live is None else live
        self.max_frames = max_frames
        self.realtime = realtime
        self.loop = loop  # a file starts over at its end (soak tests: a camera that never stops)
        # Live daemons pin glibc's mmap threshold, so a fresh frame buffer per frame costs page faults
        # (pipeline/frame_pool.py); file runs keep glibc's fast default and need no pool.
        self._pool = FramePool(16) if self.live else None
        self._bgr: np.ndarray | None = None
        self.frames_read = 0
        self.frames_dropped = 0
        self.failed = False  # a file that ended in an error before delivering any frame
        self._declared_frames = 0  # the frame count a file's container declares (0: unknown)
        self._out = out
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._io_timeout_ms = int(io_timeout_s * 1000)
        # Opening a stream probes it (FFmpeg reads until it knows the codec: ~3 s on RTSP here), so the
        # open gets its own, longer timeout than the stall watchdog that guards each read.
        self._open_timeout_ms = int(open_timeout_s * 1000)
        self._stop = threading.Event()
        self._pending: Frame | None = None  # a live source's last frame put on the queue
        self._last_pts = -math.inf
        self._first_index = 0  # a fragment's first frame's number in the whole file
        self._thread = threading.Thread(target=self._run, name=f"source-{spec.id}", daemon=True)

    @property
    def source_id(self) -> str:
        return self.spec.id

    def start(self) -> None:
        if self._thread.ident is not None:
            raise RuntimeError(f"source {self.spec.id!r} was already started")
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to exit; it notices within ~50 ms even while blocked on a full queue."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has exited (or never started)."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # --- capture thread -------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._retry_initial_s
        while not self._stop.is_set():
            before = self.frames_read
            try:
                end = self._open_and_read()
            except Exception as e:  # cv2.error and the like: report it, never die silently
                log.exception("source_failed", source=self.spec.id)
                end = f"{type(e).__name__}: {e}"
            if end in ("stopped", "done"):
                return
            if not self.live:
                short = self._declared_frames and self.frames_read < 0.9 * self._declared_frames
                if end == "read failed" and self.frames_read > 0 and short:
                    self._status("error", f"{self.spec.uri}: ended after {self.frames_read} of "
                                          f"{self._declared_frames} frames (truncated or corrupt)")
                elif end == "read failed" and self.frames_read > 0:  # a file's read fails at its end
                    self._status("eof", f"end of file after {self.frames_read} frames")
                else:
                    self.failed = self.frames_read == 0
                    if end == "read failed":
                        end = f"{self.spec.display_uri}: no decodable frame (truncated, or a codec FFmpeg lacks)"
                    self._status("error", end)
                return
            if self.frames_read > before:
                delay = self._retry_initial_s
            self._status("error", end)
            self._status("reconnecting", f"retry in {delay:g} s")
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self._retry_max_s)

    def _open_and_read(self) -> str:
        """Open once and read until the stream ends; returns why: 'stopped', 'done' or a failure."""
        why = self._unreadable_file()
        if why is not None:
            return why
        cap = self._open()
        if cap is None:
            if self.spec.kind == "file":
                return f"{self.spec.uri}: not a video, or a format FFmpeg cannot open"
            return f"cannot open {self.spec.display_uri}"
        try:
            w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            fps = fps if math.isfinite(fps) and fps > 0 else 0.0
            if self.spec.kind == "file":
                count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT))
                self._declared_frames = int(count) if math.isfinite(count) and count > 0 else 0
                if self.spec.start_s:  # a fragment: frames keep the whole file's numbers and times
                    cap.set(cv2.CAP_PROP_POS_MSEC, self.spec.start_s * 1000.0)
                    self._first_index = max(0, round(cap.get(cv2.CAP_PROP_POS_FRAMES)))
                    self._declared_frames = max(0, self._declared_frames - self._first_index)
            if not self._status("opened", f"width={w} height={h} fps={fps:.3f} kind={self.spec.kind}"):
                return "stopped"
            return self._read_loop(cap, fps)
        finally:
            cap.release()

    def _unreadable_file(self) -> str | None:
        """A one-line reason a file source cannot be read at all, checked before FFmpeg tries."""
        if self.spec.kind != "file":
            return None
        path = Path(self.spec.uri)
        try:
            with path.open("rb") as f:
                empty = not f.read(1)
        except FileNotFoundError:
            return f"video file not found: {path}"
        except IsADirectoryError:
            return f"{path} is a directory, not a video file"
        except PermissionError:
            return f"{path}: permission denied"
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        return f"{path}: empty file (0 bytes)" if empty else None

    def _open(self) -> cv2.VideoCapture | None:
        kind = self.spec.kind
        if kind == "camera":
            cap = cv2.VideoCapture(int(self.spec.uri))
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the backend supports it: less latency
        elif kind == "file":
            cap = cv2.VideoCapture(self.spec.uri, cv2.CAP_FFMPEG)
        else:
            cap = cv2.VideoCapture(self.spec.uri, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._open_timeout_ms,
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._io_timeout_ms])
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _read_loop(self, cap: cv2.VideoCapture, fps: float) -> str:
        t0 = time.monotonic()
        n = 0
        while not self._stop.is_set():
            if self.max_frames is not None and self.frames_read >= self.max_frames:
                self._status("eof", f"max_frames={self.max_frames} reached")
                return "done"
            if self.realtime and fps > 0:
                wait = t0 + n / fps - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return "stopped"
            started = time.monotonic()
            ok, bgr = cap.read(self._bgr)
            if (not ok or bgr is None) and self.loop and n > 0 and self.spec.kind == "file":
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                t0, n = time.monotonic(), 0
                started = t0
                ok, bgr = cap.read(self._bgr)
            if not ok or bgr is None:
                return "read failed"
            if self.live and time.monotonic() - started >= 0.9 * self._io_timeout_ms / 1000:
                # FFmpeg's read timeout fired and the decoder handed back a frame it still held: the
                # stream is stalled (connected, nothing arriving). Reopen now rather than after the
                # decoder has drained its delay, one timeout per held frame.
                return f"stalled: no data for {self._io_timeout_ms / 1000:g} s"
            capture_time = time.time()
            index = self._first_index + self.frames_read
            n += 1
            pts = None if self.live else self._pts(cap, index, fps)
            end = self.spec.end_s
            if end is not None and pts is not None and pts >= end - 1e-6:
                self._status("eof", f"end of fragment at {end:g} s after {self.frames_read} frames")
                return "done"
            self._bgr = bgr  # decoded into the same buffer next time (frames carry their own RGB copy)
            frame = Frame(self.spec.id, index, pts, capture_time, _to_rgb(bgr, self._pool), self.live)
            self.frames_read += 1  # before the put: a consumer may rely on frames_read - 2 <= newest index
            if self.live:
                self._put_latest(frame)
            elif not self._put(frame):
                return "stopped"
        return "stopped"

    def _pts(self, cap: cv2.VideoCapture, index: int, fps: float) -> float | None:
        """Seconds from the demuxer's timestamp; index/fps when that is missing or not increasing."""
        pos = float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        if not (math.isfinite(pos) and pos >= 0 and pos > self._last_pts):
            if fps <= 0:
                return None
            pos = index / fps
        self._last_pts = pos
        return pos

    def _put(self, msg: Message) -> bool:
        """Blocking put that gives up when stopped; False then."""
        while not self._stop.is_set():
            try:
                self._out.put(msg, timeout=_PUT_TICK_S)
                return True
            except queue.Full:
                continue
        return False

    def _put_latest(self, frame: Frame) -> None:
        """Replace this source's pending frame with ``frame`` atomically, under the queue's own lock.

        The replaced frame counts as dropped. If the queue is full of other messages (statuses, other
        sources' frames), ``frame`` itself is dropped: a live reader must not wait on a slow consumer.
        """
        q = self._out
        with q.mutex:
            items = q.queue
            stale = 0
            if self._pending is not None:
                kept = [m for m in items if m is not self._pending]
                stale = len(items) - len(kept)
                if stale:
                    items.clear()
                    items.extend(kept)
                    q.unfinished_tasks -= stale
            self.frames_dropped += stale
            if 0 < q.maxsize <= len(items):  # only possible when nothing was replaced
                self.frames_dropped += 1
                return
            items.append(frame)
            q.unfinished_tasks += 1
            self._pending = frame
            q.not_empty.notify()

    def _status(self, status: str, detail: str) -> bool:
        level = "warning" if status in ("error", "reconnecting") else "info"
        getattr(log, level)("source_" + status, source=self.spec.id, detail=detail)
        return self._put(SourceStatus(self.spec.id, status, detail, time.time(), self.frames_read,
                                      self.frames_dropped))


def _to_rgb(image: np.ndarray, pool: FramePool | None = None) -> np.ndarray:
    code = (cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGRA2RGB if image.shape[2] == 4
            else cv2.COLOR_BGR2RGB)
    if pool is None:
        return cv2.cvtColor(image, code)
    return cv2.cvtColor(image, code, dst=pool.take((image.shape[0], image.shape[1], 3)))
