"""The driver of ``analyze --workers N`` and ``analyze --ray ADDRESS``: the videos made into jobs, run on the
local pool (``analyze_jobs``) or on Ray (``analyze_ray``), and the finished parts merged into one analysis
folder, which is then completed exactly like a one-process run's (``analyze.finish``): the face index is one
file of every video's rows, its unknown tracks grouped once, over all of them, here.

What the merge costs: the parts' bytes are written once (events, annotated MP4s, faces), the index rows
are grouped in one pass (complete linkage over the unknown tracks, see ``pipeline/face_groups.py``) and the
best frames are read from the videos at the driver; nothing is decoded twice but those best frames.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemon.config import Settings
from daemon.profiles.analyze import Analysis, check_out, failures, finish, index_meta
from daemon.profiles.analyze_chunks import CHUNK_S, OVERLAP_S, check_chunking
from daemon.profiles.analyze_jobs import GalleryPayload, Progress, VideoJob, VideoPart, make_jobs, run_pool
from pipeline.private_files import open_private


def merge_files(parts: dict[int, VideoPart], jobs: list[VideoJob], out: Path) -> None:
    """Write the parts into ``out`` in the videos' order: ``events.jsonl`` (each video's events in its own order),
    the annotated MP4s and the unknown tracks' faces (each part's bytes dropped once written)."""
    with open_private(out / "events.jsonl", "w", encoding="utf-8") as f:
        for j in jobs:
            for line in parts[j.index].event_lines:
                f.write(line + "\n")
    for j in jobs:
        for rel, data in parts[j.index].files.items():
            target = out / rel
            target.parent.mkdir(exist_ok=True)
            with open_private(target, "wb") as f:
                f.write(data)
        parts[j.index].files = {}


def _model_of(settings: Settings, gallery: Path | str | None, parts: dict[int, VideoPart]) -> tuple[str, int]:
    """The model the workers embedded with (the gallery's, else the configured one when no job got that far)."""
    for p in parts.values():
        if p.model_id:
            return p.model_id, p.dim
    if gallery is not None:
        from pipeline.gallery import Gallery

        g = Gallery.open(gallery)
        try:
            return g.model_id, g.dim
        finally:
            g.close()
    from models.registry import get_spec, model_id_for

    return model_id_for(settings.embedder.model, settings.embedder.flip), get_spec(settings.embedder.model).dim


def stitch_chunks(settings: Settings, gallery: Path | str | None, jobs: list[VideoJob],
                  parts: dict[int, VideoPart]) -> tuple[list[VideoJob], dict[int, VideoPart]]:
    """A job and its part per video: the chunks of a long one stitched (``analyze_stitch``) at the same-person
    threshold the analysis decided at; a video that was one job is left exactly as it is."""
    if all(j.chunks == 1 for j in jobs):
        return jobs, parts
    from daemon.profiles.analyze_stitch import stitch

    threshold = index_meta(settings, gallery, *_model_of(settings, gallery, parts)).threshold
    by_video: dict[int, list[VideoJob]] = {}
    for j in jobs:
        by_video.setdefault(j.video_index, []).append(j)
    out_jobs, out_parts = [], {}
    for v, group in sorted(by_video.items()):
        first = group[0]
        if first.chunks == 1:
            part = parts[first.index]
        else:
            part = stitch([(j, parts[j.index]) for j in sorted(group, key=lambda j: j.chunk)], threshold,
                          settings.pipeline.max_embeds_per_track)
        job = replace(first, index=v, frames=sum(j.frames for j in group), chunk=0, chunks=1, start_s=0.0,
                      end_s=None, own_end_s=None)
        out_jobs.append(job)
        out_parts[v] = replace(part, index=v)
    return out_jobs, out_parts


def run_jobs(settings: Settings, gallery: Path | str | None, videos: list[Path], out: Path, workers: int = 2,
             ray: str | None = None, chunk_s: float = CHUNK_S, overlap_s: float = OVERLAP_S) -> dict[str, Any]:
    """``analyze --workers N`` (a local process pool) or ``analyze --ray ADDRESS``: one job per video (or per
    chunk of a long one, stitched back), merged."""
    check_chunking(chunk_s, overlap_s)
    check_out(videos, out)
    if ray is not None:
        from daemon.profiles.analyze_ray import connect

        session = connect(ray)  # an unreachable cluster is one line before anything is written
    if isinstance(gallery, Path):  # a gallery that cannot be read fails here, in one line, not on every worker
        from pipeline.gallery import Gallery

        Gallery.open(gallery).close()
    payload = GalleryPayload.of(gallery)
    jobs = make_jobs(videos, chunk_s, overlap_s)
    # The settings as the plain class: a config file's settings class is local to load_settings (unpicklable),
    # and workers must not re-read their own environment over the driver's settings.
    settings = Settings.model_construct(**dict(settings))
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(jobs, sys.stderr.isatty())
    try:
        if ray is not None:
            parts, backend = session.run(settings, payload, jobs, progress), session.describe()
        else:
            parts, backend = run_pool(workers, settings, payload, jobs, progress), f"local pool of {workers}"
    finally:
        progress.close()
        if ray is not None:
            session.close()
    workers_used = sorted({p.worker.rsplit(":", 1)[0] for p in parts.values() if p.worker})
    n_jobs = len(jobs)
    jobs, parts = stitch_chunks(settings, gallery, jobs, parts)
    merge_files(parts, jobs, out)
    lines = [line for j in jobs for line in parts[j.index].event_lines]
    events = [json.loads(line) for line in lines]
    model_id, dim = _model_of(settings, gallery, parts)
    a = Analysis(events, {(j.source_id, ident): segs for j in jobs for ident, segs in parts[j.index].spans.items()},
                 [r for j in jobs for r in parts[j.index].rows], max((p.exit_code for p in parts.values()), default=0),
                 [j.source_id for j in jobs], {j.source_id: Path(j.path) for j in jobs}, model_id, dim)
    failed = [{"video": parts[j.index].source_id, "reason": parts[j.index].error} for j in jobs
              if parts[j.index].error] + failures(events)
    return finish(settings, gallery, out, a, len(videos), failed,
                  {"backend": backend, "retries": progress.retries(), "workers_used": workers_used, "jobs": n_jobs})
