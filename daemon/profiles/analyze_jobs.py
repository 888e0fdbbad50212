"""``analyze`` over several processes or machines: one job per video, each analysed by its own daemon in a
worker into a part folder of its own, the parts merged by the driver into one analysis folder identical to
a one-process run's (the same events and timeline, modulo wall-clock fields).

Why one daemon per video: a file source's events depend on that source alone (its tracker, cooldowns and
media clock are per source), so a video analysed alone gives the events it gives beside others. A part
travels back whole (event lines, timeline spans, index rows with their embeddings, annotated MP4 and face
crops as bytes) and is written by the driver only once its job has finished, so a worker killed half-way
leaves nothing behind, its retry's part is the one written and no event appears twice. The gallery is
shipped once as bytes (a consistent SQLite snapshot; a database URL as it is) and written to a private
temporary file by each worker, so a worker never needs the driver's path to it. The videos must be
readable at the same path by every worker (shared storage): they are far too big to ship.

A video longer than 1.5 ``--chunk-s`` is several jobs, one per chunk (``analyze_chunks``), each reading its
part of the file as a media fragment; ``analyze_stitch`` makes them one video's part again.

The local pool (``--workers N``, here) and Ray (``--ray``, ``analyze_ray``) run the same :func:`analyse_part`;
this module also holds the progress bar; ``analyze_driver`` merges the parts.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from daemon.config import Settings
from pipeline.face_index import TrackRow
from pipeline.private_files import open_private

log = structlog.get_logger(__name__)

Report = Callable[[str, int, Any], None]  # (kind, job index, value): "start" (host/pid) or "frames" (count)
PART_PREFIX = "facestream-part-"  # + the worker's pid: a killed worker's folder is known as such
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@dataclass(frozen=True)
class VideoJob:
    """One video, or one chunk of a long one, to analyse: its place among the jobs, the path every worker reads
    it at, the source id a one-process run would give it, and its length (for the progress bar). A chunk
    (``analyze_chunks``) reads ``[start_s, end_s)`` of the video and owns ``[start_s, own_end_s)``; the rest is
    the overlap its neighbour's tracks are stitched across."""

    index: int
    path: str
    source_id: str
    frames: int  # the job's frames: the video's, or the chunk's with its overlap
    fps: float
    video: int = -1  # the video's place in the command line (-1: ``index``, a video that is one job)
    chunk: int = 0
    chunks: int = 1
    start_s: float = 0.0
    end_s: float | None = None
    own_end_s: float | None = None
    overlap_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0

    @property
    def label(self) -> str:
        return self.source_id if self.chunks == 1 else f"{self.source_id} chunk {self.chunk + 1}/{self.chunks}"

    @property
    def video_index(self) -> int:
        return self.index if self.video < 0 else self.video

    @property
    def source(self) -> str:
        """What the job's daemon opens: the file, or its chunk as a media fragment."""
        if self.chunks == 1:
            return self.path
        return f"{self.path}#t={self.start_s:g}" + ("" if self.end_s is None else f",{self.end_s:g}")


@dataclass
class VideoPart:
    """A finished job: everything its daemon wrote, in memory, for the driver to merge."""

    index: int
    source_id: str
    exit_code: int
    event_lines: list[str] = field(repr=False)
    spans: dict[str, list[tuple[float, float]]]  # identity -> recognised spans
    rows: list[TrackRow] = field(repr=False)
    files: dict[str, bytes] = field(repr=False)  # relative path -> bytes: annotated MP4, faces/*.jpg
    model_id: str = ""
    dim: int = 0
    worker: str = ""  # host:pid that ran it
    error: str | None = None  # the job itself failed (not the video): one line
    boxes: dict[int, dict[int, tuple[float, float, float, float]]] = field(default_factory=dict, repr=False)
    # a chunk's: track id -> frame -> box, on the frames it shares with its neighbours (analyze_chunks)


@dataclass(frozen=True)
class GalleryPayload:
    """The gallery as shipped to workers: a file's bytes, or a database URL (workers connect themselves)."""

    data: bytes | None = None
    url: str | None = None

    @classmethod
    def of(cls, gallery: Path | str | None) -> GalleryPayload | None:
        if gallery is None:
            return None
        if not isinstance(gallery, Path):
            return cls(url=str(gallery))
        src = sqlite3.connect(f"{gallery.resolve().as_uri()}?mode=ro", uri=True)
        try:  # serialize(): one consistent snapshot, a writer's WAL included, whatever the file's journal mode
            return cls(data=src.serialize())
        finally:
            src.close()

    def materialise(self, folder: Path) -> Path | str:
        if self.url is not None:
            return self.url
        path = folder / "gallery.db"
        with open_private(path, "wb") as f:
            f.write(self.data or b"")
        return path


def source_ids(videos: list[Path]) -> list[str]:
    """The ids a one-process run gives these videos (the daemon's rule: the file stem, numbered when two
    videos share one)."""
    from pipeline.sources import parse_source

    ids = [parse_source(str(v)).id for v in videos]
    if len(set(ids)) != len(ids):
        ids = [f"{i}-{k}" for k, i in enumerate(ids)]
    return ids


def make_jobs(videos: list[Path], chunk_s: float = 0.0, overlap_s: float = 0.0) -> list[VideoJob]:
    """A job per video; a video longer than 1.5 ``chunk_s`` (0: never) a job per chunk (``analyze_chunks``)."""
    from daemon.profiles.analyze import media_frames
    from daemon.profiles.analyze_chunks import plan_chunks

    jobs: list[VideoJob] = []
    for k, (v, sid) in enumerate(zip(videos, source_ids(videos), strict=True)):
        frames, fps = media_frames(v)
        spans = plan_chunks(v, frames / fps if fps > 0 else 0.0, chunk_s, overlap_s)
        if len(spans) < 2:
            jobs.append(VideoJob(len(jobs), str(v.resolve()), sid, frames, fps, k))
            continue
        for c, (start, end, own_end) in enumerate(spans):
            n = round(((end if end is not None else frames / fps) - start) * fps)
            jobs.append(VideoJob(len(jobs), str(v.resolve()), sid, n, fps, k, c, len(spans), start, end, own_end,
                                 overlap_s))
    return jobs


def limit_threads() -> None:
    """One torch/ONNX/BLAS thread per worker: several workers' thread pools on a few cores crawl (~30x)."""
    os.environ.update(THREAD_ENV)
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def analyse_part(settings: Settings, gallery: GalleryPayload | None, job: VideoJob, report: Report) -> VideoPart:
    """Analyse one video in a private temporary folder and return everything it wrote (the folder is removed).
    Exceptions propagate: the driver records them as the job's failure."""
    report("start", job.index, f"{socket.gethostname()}:{os.getpid()}")  # first: a retry is known as one
    limit_threads()
    from daemon.profiles.analyze import analyse  # torch and the daemon: seconds

    sweep_lost_parts(Path(tempfile.gettempdir()))
    tmp = Path(tempfile.mkdtemp(prefix=f"{PART_PREFIX}{os.getpid()}-"))
    try:
        video = Path(job.path)
        stem = "_".join(video.stem.split()) or "file"
        if stem != job.source_id:  # the daemon names a source after its file: a link named by the id
            (tmp / "src").mkdir()
            link = tmp / "src" / f"{job.source_id}{video.suffix}"
            link.symlink_to(video)
            video = link
        where = gallery.materialise(tmp) if gallery is not None else None
        settings = settings.model_copy(update={"pipeline": settings.pipeline.model_copy(
            update={"threads_per_stage": 1})})
        last = [0.0]

        def progress(frames: int) -> None:
            if time.monotonic() - last[0] >= 0.5:
                last[0] = time.monotonic()
                report("frames", job.index, frames)

        observers: tuple[Any, ...] = ()
        if job.chunks > 1:
            from daemon.profiles.analyze_chunks import OverlapBoxes

            video = Path(f"{video}#t={job.source.rpartition('#t=')[2]}")
            observers = (OverlapBoxes(job.start_s, job.own_end_s, job.overlap_s),)
        a = analyse(settings, where, [video], tmp / "out", progress, observers)
        out = tmp / "out"
        for r in a.rows:
            r.path = job.path
        files = {str(p.relative_to(out)): p.read_bytes()
                 for p in [*out.glob("*.annotated.mp4"), *out.glob("faces/*.jpg")]}
        lines = (out / "events.jsonl").read_text(encoding="utf-8").splitlines()
        spans = {ident: list(segs) for (_, ident), segs in a.spans.items()}
        return VideoPart(job.index, job.source_id, a.exit_code, lines, spans, a.rows, files, a.model_id, a.dim,
                         f"{socket.gethostname()}:{os.getpid()}", boxes=observers[0].boxes if observers else {})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_lost_parts(root: Path) -> None:
    """Remove the part folders of workers on this machine that were killed mid-task (their process is gone):
    nobody else ever will."""
    for d in root.glob(f"{PART_PREFIX}*-*"):
        pid = d.name.removeprefix(PART_PREFIX).split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def failed_part(job: VideoJob, error: BaseException | str) -> VideoPart:
    """A job that raised or whose worker was lost for good: the video is reported with the reason."""
    text = str(error).strip()
    line = (text.splitlines()[0] if text else type(error).__name__)[:300]
    return VideoPart(job.index, job.source_id, 1, [], {}, [], {}, error=line)


class Progress:
    """One bar over the whole job: media seconds done (finished videos whole, running ones by their frames),
    videos finished, ETA; each job's starts counted, so a retried job (its worker lost) is logged."""

    def __init__(self, jobs: list[VideoJob], enabled: bool) -> None:
        from tqdm import tqdm

        self.jobs = {j.index: j for j in jobs}
        self.frames: dict[int, int] = {}
        self.starts: dict[int, list[str]] = {}
        self.done: set[int] = set()
        total = sum(j.seconds for j in jobs)
        self.bar = tqdm(total=round(total, 1) or None, desc="analyze", unit="s", disable=not enabled,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} media s [{elapsed}<{remaining}]{postfix}")
        self._show()

    def report(self, kind: str, index: int, value: Any) -> None:
        if kind == "start":
            seen = self.starts.setdefault(index, [])
            seen.append(str(value))
            self.frames[index] = 0
            if len(seen) > 1:
                log.warning("analyze_job_retried", video=self.jobs[index].label, attempt=len(seen),
                            worker=value, previous=seen[-2], detail="its worker was lost; analysed again from the "
                            "start, the lost attempt's output discarded")
        elif kind == "frames":
            self.frames[index] = int(value)
        self._show()

    def finished(self, index: int) -> None:
        self.done.add(index)
        self._show()

    def retries(self) -> dict[str, int]:
        return {self.jobs[i].label: len(s) - 1 for i, s in sorted(self.starts.items()) if len(s) > 1}

    def _show(self) -> None:
        secs = 0.0
        for i, j in self.jobs.items():
            if i in self.done:
                secs += j.seconds
            elif j.fps > 0:
                secs += min(self.frames.get(i, 0), j.frames) / j.fps
        self.bar.n = round(secs, 1)
        self.bar.set_postfix_str(f"videos {len(self.done)}/{len(self.jobs)}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


# ---- the local process pool -----------------------------------------------------------------------------
_POOL: dict[str, Any] = {}


def _pool_init(queue: Any, gallery: GalleryPayload | None, log_level: str, log_format: str) -> None:
    """Each pool process: its thread budget before torch is imported, the gallery once, the report queue."""
    os.environ.update(THREAD_ENV)
    from daemon.logs import configure_logging

    configure_logging(log_level, log_format)
    _POOL.update(queue=queue, gallery=gallery)


def _pool_task(settings: Settings, job: VideoJob) -> VideoPart:
    q = _POOL["queue"]
    return analyse_part(settings, _POOL["gallery"], job, lambda kind, index, value: q.put((kind, index, value)))


def run_pool(workers: int, settings: Settings, gallery: GalleryPayload | None, jobs: list[VideoJob],
             progress: Progress, max_retries: int = 2) -> dict[int, VideoPart]:
    """The jobs on ``workers`` spawned processes. A process that dies (killed, out of memory) breaks the pool:
    the jobs it had not finished run again in a new pool, a job started more than ``max_retries`` + 1 times
    is reported failed."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # torch and threads in the parent: never fork
    q = ctx.Queue()
    parts: dict[int, VideoPart] = {}
    todo = list(jobs)

    def drain() -> None:
        while True:
            try:
                progress.report(*q.get_nowait())
            except queue_mod.Empty:
                return

    while todo:
        lost: list[VideoJob] = []
        started = sum(len(s) for s in progress.starts.values())
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_pool_init,
                                 initargs=(q, gallery, settings.log_level, settings.log_format)) as pool:
            futures = {pool.submit(_pool_task, settings, j): j for j in todo}
            while futures:
                done, _ = wait(futures, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for f in done:
                    job = futures.pop(f)
                    try:
                        parts[job.index] = f.result()
                    except BrokenProcessPool:
                        lost.append(job)
                        continue
                    except Exception as exc:
                        parts[job.index] = failed_part(job, exc)
                    progress.finished(job.index)
        drain()
        todo = []
        no_start = sum(len(s) for s in progress.starts.values()) == started  # the pool itself cannot start
        for job in lost:
            if no_start or len(progress.starts.get(job.index, [])) > max_retries:
                why = "no worker process could start" if no_start else f"its worker died {max_retries + 1} times"
                parts[job.index] = failed_part(job, why)
                progress.finished(job.index)
            else:
                todo.append(job)
    return parts
