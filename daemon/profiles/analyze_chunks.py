"""A long video as chunks for ``analyze --workers N`` / ``--ray`` (``--chunk-s``): cut at keyframes, each read
with an overlap into the next, so a day of one camera is analysed on many workers, not one.

Why keyframes: a chunk's daemon seeks to its start, and a seek lands exactly only where decoding can begin;
a boundary elsewhere would cost decoding from the previous keyframe, or frames seen by two chunks. The
keyframes are read from the container's packets with PyAV (demuxing only, nothing decoded: a second or two
for an hour of video). Why an overlap: a track alive at a boundary is seen by the next chunk only from its
first scan there; the overlap (a few scan intervals) lets ``analyze_stitch`` find it in both chunks and join
them into one track.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHUNK_S = 300.0  # media seconds per chunk by default: a long video's work in pieces of a few minutes
OVERLAP_S = 2.0  # the default overlap: four scans at detector.scan_interval_s = 0.5
SPLIT_FROM = 1.5  # a video is split when longer than this many chunks: a short tail is never a chunk of its own


def check_chunking(chunk_s: float, overlap_s: float) -> None:
    """One line for settings that cannot make chunks."""
    if chunk_s < 0:
        raise ValueError(f"--chunk-s must be 0 (never split) or more, got {chunk_s:g}")
    if overlap_s < 0:
        raise ValueError(f"--chunk-overlap-s must be 0 or more, got {overlap_s:g}")
    if chunk_s > 0 and overlap_s > chunk_s / 2:
        raise ValueError(f"--chunk-overlap-s {overlap_s:g} is more than half of --chunk-s {chunk_s:g}: "
                         "chunks would mostly be read twice")


def keyframe_times(path: Path) -> list[float]:
    """The video stream's keyframes, in seconds from its first frame (the clock OpenCV's positions use)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first = stream.start_time or 0
        tb = float(stream.time_base)
        times = {round((p.pts - first) * tb, 6) for p in container.demux(stream)
                 if p.is_keyframe and p.pts is not None}
    return sorted(t for t in times if t >= 0)


def plan_chunks(path: Path, duration: float, chunk_s: float, overlap_s: float) -> list[tuple[float, float | None,
                                                                                               float | None]]:
    """``(start, read end, owned end)`` per chunk (the last: ``None, None``, to the file's end); one chunk
    (``[(0, None, None)]``) when ``chunk_s`` is 0, the video short or without keyframes to cut at."""
    whole: list[tuple[float, float | None, float | None]] = [(0.0, None, None)]
    if chunk_s <= 0 or duration <= SPLIT_FROM * chunk_s:
        return whole
    return spans_at(split_points(keyframe_times(path), duration, chunk_s), overlap_s) or whole


def split_points(keyframes: list[float], duration: float, chunk_s: float) -> list[float]:
    """Boundaries at the keyframes nearest to even cuts of about ``chunk_s``, increasing, none at 0."""
    n = max(1, round(duration / chunk_s))
    points: list[float] = []
    for k in range(1, n):
        target = duration * k / n
        inside = [t for t in keyframes if t > (points[-1] if points else 0.0) and t < duration]
        if not inside:
            break
        best = min(inside, key=lambda t: abs(t - target))
        if best not in points:
            points.append(best)
    return points


def spans_at(points: list[float], overlap_s: float) -> list[tuple[float, float | None, float | None]]:
    if not points:
        return []
    starts = [0.0, *points]
    return [(s, (starts[i + 1] + overlap_s) if i + 1 < len(starts) else None,
             starts[i + 1] if i + 1 < len(starts) else None) for i, s in enumerate(starts)]


class OverlapBoxes:
    """A frame observer for a chunk's daemon: every track's box on each frame within ``overlap_s`` of the
    chunk's start and from its owned end on, the frames two neighbouring chunks both read, so the stitch
    can tell the same face on the same frame (tracks too short to have an embedding included)."""

    def __init__(self, start_s: float, own_end_s: float | None, overlap_s: float) -> None:
        self.start_s, self.own_end_s, self.overlap_s = start_s, own_end_s, overlap_s
        self.boxes: dict[int, dict[int, tuple[float, float, float, float]]] = {}

    def observe(self, msg: Any, claims: dict[int, str | None]) -> None:
        from pipeline.types import frame_time

        frame = msg.tracked.frame
        t = frame_time(frame)
        head = self.start_s > 0 and t < self.start_s + self.overlap_s
        tail = self.own_end_s is not None and t >= self.own_end_s - 1e-6
        if head or tail:
            for v in msg.tracked.tracks:
                self.boxes.setdefault(v.track_id, {})[frame.index] = tuple(round(float(c), 1) for c in v.box)

    def source_ended(self, source_id: str) -> None:
        pass

    def close(self) -> None:
        pass
