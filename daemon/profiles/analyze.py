"""``facestream analyze VIDEO... --gallery G --out DIR``: who appears where, in one command.

Runs the daemon on the videos (files: every frame, deterministic) and writes into DIR: the event log
(``events.jsonl``), the per-identity timeline (``timeline.csv``), each identity's best frame
(``best/<identity>.jpg``, the recognition with the highest score), an annotated MP4 per video, a
timeline plot (``timeline.png``), the face index (``faces.index``: a row per track, for ``facestream
search``; unknown tracks grouped into ``unknown-N`` with their best faces under ``faces/``) and
``report.html`` tying them together with relative links only, so the folder opens offline and can be
copied whole. Every file names people: mode 0600.
"""

from __future__ import annotations

import html
import json
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from daemon.config import Settings, with_overrides
from daemon.profiles import build_daemon
from daemon.profiles.outputs import Timeline
from daemon.profiles.track_index import TrackIndexer, group_summaries, write_face_index
from pipeline.face_index import IndexMeta, TrackRow
from pipeline.names import file_stem, inside
from pipeline.private_files import open_private

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facestream analysis</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left}}
img.face,img.unknown-face{{height:120px;margin:.3em}}</style>
</head><body>
<h1>facestream analysis</h1>
<p>{n_videos} video(s), {n_ids} identit{ies} recognised, gallery {gallery}, model {model}.</p>
{failed}
<h2>Who is on screen when</h2>
<img id="timeline" src="timeline.png" alt="timeline of recognised people per video">
<h2>People</h2>
<table><tr><th>identity</th><th>video</th><th>first seen (s)</th><th>last seen (s)</th>
<th>seconds on screen</th><th>appearances</th></tr>
{rows}
</table>
<h2>Best frames</h2>
{faces}
<h2>Unknown people</h2>
<p>Appearances of people the gallery does not know, grouped at the gallery's same-person threshold
({threshold}). Enrol a group once a person has checked it:
<code>facestream gallery add --from-index DIR --cluster unknown-1 --name NAME</code>.</p>
<table id="unknown"><tr><th>group</th><th>appearances</th><th>videos</th><th>first seen</th><th>last seen</th>
<th>best face</th></tr>
{unknown}
</table>
<h2>Files</h2>
<ul>{files}</ul>
</body></html>
"""


def _frame(video: Path, index: int) -> Any:
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = cap.read()
        return bgr if ok else None
    finally:
        cap.release()


def _write_jpeg(path: Path, bgr: Any) -> None:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError(f"cannot encode {path}")
    with open_private(path, "wb") as f:
        f.write(buf.tobytes())


def best_frames(events: list[dict], paths: dict[str, Path], out: Path) -> dict[str, str]:
    """``best/<identity>.jpg``: the face of each identity's highest-scoring recognition, with some context."""
    best: dict[str, dict] = {}
    for e in events:
        if e["topic"] == "face.recognized" and e.get("bbox") and (e["identity"] not in best
                                                                  or e["score"] > best[e["identity"]]["score"]):
            best[e["identity"]] = e
    (out / "best").mkdir(exist_ok=True)
    written = {}
    for ident, e in sorted(best.items()):
        bgr = _frame(paths[e["source"]], e["frame"])
        if bgr is None:
            continue
        x1, y1, x2, y2 = e["bbox"]
        pad = 0.4 * max(x2 - x1, y2 - y1)
        h, w = bgr.shape[:2]
        crop = bgr[max(0, int(y1 - pad)):min(h, int(y2 + pad)), max(0, int(x1 - pad)):min(w, int(x2 + pad))]
        rel = f"best/{file_stem(ident)}.jpg"  # a name is never a path: '../x' or 'a/b' stay inside best/
        _write_jpeg(inside(out, rel), crop)
        written[ident] = rel
    return written


def timeline_plot(rows: list[dict], spans: dict[tuple[str, str], list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    people = sorted({ident for _, ident in spans}, key=lambda p: (p.startswith("unknown "), p)) or ["(nobody)"]
    sources = sorted({src for src, _ in spans})
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.5 * len(people)))
    for (src, ident), segs in spans.items():
        ax.broken_barh([(a, max(b - a, 0.05)) for a, b in segs], (people.index(ident) - 0.35, 0.7),
                       color=colours(sources.index(src) % 10), label=src)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        uniq = dict(zip(labels, handles, strict=True))
        ax.legend(uniq.values(), uniq.keys(), loc="upper right", fontsize=8)
    ax.set_yticks(range(len(people)), people)
    ax.set_xlabel("seconds into the video")
    ax.set_title("who is on screen when")
    fig.tight_layout()
    with open_private(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


@dataclass
class Analysis:
    """What running the daemon over the videos gave, before the report is made of it: the event log's lines
    in file order, each (video, identity)'s recognised spans, the face index's rows, the daemon's exit code
    and the model it embedded with (``order``: the videos' source ids as given)."""

    events: list[dict]
    spans: dict[tuple[str, str], list[tuple[float, float]]]
    rows: list[TrackRow]
    exit_code: int
    order: list[str]
    paths: dict[str, Path]
    model_id: str
    dim: int


def check_out(videos: list[Path], out: Path) -> None:
    """Before anything is written: every video exists and ``out`` is a new (or empty) analysis folder."""
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        raise ValueError(f"video file not found: {missing[0]}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if any((out / n).exists() for n in ("events.jsonl", "report.html", "faces.index")):
        # An earlier analysis is someone's record: never overwritten or appended to.
        raise ValueError(f"--out {out} already holds an analysis (events.jsonl, report.html or faces.index): "
                         "choose a new folder")


def media_frames(video: Path) -> tuple[int, float]:
    """(frame count, fps) as the container states them; (0, 0.0) when it cannot be opened."""
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()


def analyse(settings: Settings, gallery: Path | str | None, videos: list[Path], out: Path,
            progress: Callable[[int], None] | None = None, observers: tuple[Any, ...] = ()) -> Analysis:
    """Run one daemon over ``videos`` (every frame), writing ``out/events.jsonl``, ``timeline.csv``, the
    annotated MP4s and the unknown tracks' faces; ``progress`` is told the frames processed so far
    (``observers``: more frame observers, a chunk's boxes)."""
    out.mkdir(parents=True, exist_ok=True)
    settings = with_overrides(settings, sinks={"jsonl": str(out / "events.jsonl"), "zmq": None, "stdout": False,
                                               "timeline_csv": str(out / "timeline.csv"), "annotate_dir": str(out)})
    settings = settings.model_copy(update={"sources": [str(v) for v in videos]})
    daemon, parts = build_daemon(settings, gallery)
    paths = {s.id: Path(s.uri) for s in daemon.specs}
    indexer = TrackIndexer(out, paths)
    daemon.add_observer(indexer)
    for o in observers:
        daemon.add_observer(o)
    rc: dict[str, int] = {}
    runner = threading.Thread(target=lambda: rc.update(rc=daemon.run(install_signals=False)), daemon=True)
    runner.start()
    while runner.is_alive():
        runner.join(0.2)
        if progress is not None:
            progress(sum(src.frames_processed for src in daemon.snapshot().sources))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return Analysis(events, dict(parts.timeline.spans), indexer.rows, rc.get("rc", 1), [s.id for s in daemon.specs],
                    paths, daemon.model_id, daemon.embedder.dim)


def run_analyze(settings: Settings, gallery: Path | str | None, videos: list[Path], out: Path) -> dict[str, Any]:
    """The videos in one daemon in this process (``analyze`` without ``--workers`` or ``--ray``)."""
    check_out(videos, out)
    from tqdm import tqdm

    total = sum(media_frames(v)[0] for v in videos)
    with tqdm(total=total or None, desc="analyze", unit="frame", disable=not sys.stderr.isatty()) as bar:
        def progress(n: int) -> None:
            bar.n = n
            bar.refresh()

        a = analyse(settings, gallery, videos, out, progress)
    return finish(settings, gallery, out, a, len(videos))


def failures(events: list[dict]) -> list[dict[str, str]]:
    """The videos that could not be analysed to their end, with the reason their source gave."""
    return [{"video": e["source"], "reason": e.get("detail") or e["status"]} for e in events
            if e.get("topic") == "source.status" and e.get("status") == "error"]


def finish(settings: Settings, gallery: Path | str | None, out: Path, a: Analysis, n_videos: int,
           failed: list[dict[str, str]] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """From an analysis whose events, timeline, annotated videos and faces are in ``out``: the face index
    (unknown tracks grouped over all rows), best frames, timeline plot and report; the result."""
    timeline = Timeline()
    timeline.spans.update(a.spans)
    timeline.write(out / "timeline.csv")
    rows = timeline.rows()
    meta = index_meta(settings, gallery, a.model_id, a.dim)
    index_path = write_face_index(out, meta, a.rows, a.order)
    groups = group_summaries(a.rows, a.order)
    spans: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for (src, ident), segs in a.spans.items():
        spans[(src, ident)] = list(segs)
    for g in groups:  # unknown groups are rows of the plot too
        for src, t0, t1 in g["spans"]:
            spans[(src, g["label"])].append((t0, t1))
    faces = best_frames(a.events, a.paths, out)
    timeline_plot(rows, spans, out / "timeline.png")
    annotated = sorted(p.name for p in out.glob("*.annotated.mp4"))
    for name in annotated:
        (out / name).chmod(0o600)  # OpenCV's writer creates it with the umask
    failed = failures(a.events) if failed is None else failed
    _write_page(out, rows, faces, groups, annotated, n_videos, gallery, a.model_id, meta.threshold, failed)
    for g in groups:
        del g["spans"]
    exit_code = a.exit_code if a.exit_code != 0 or not failed else 1  # a video not analysed: not a success
    return {"out": str(out), "videos": n_videos, "exit_code": exit_code, "events": len(a.events),
            "identities": sorted({r["identity"] for r in rows}), "best_frames": faces, "annotated": annotated,
            "report": str(out / "report.html"), "timeline_csv": str(out / "timeline.csv"),
            "timeline_png": str(out / "timeline.png"), "face_index": str(index_path), "index_rows": len(a.rows),
            "threshold": meta.threshold, "unknown_groups": groups, "failed": failed, **(extra or {})}


def index_meta(settings: Settings, gallery: Path | str | None, model_id: str, dim: int) -> IndexMeta:
    """The embedder and the same-person threshold the analysis decided at, with where it came from (a
    run without a gallery: the model's impostor tail for one comparison at the target FAR)."""
    from pipeline.gallery import Gallery
    from pipeline.gallery.operating_point import gallery_point, prior_point

    p, gs = settings.pipeline, settings.gallery
    if gallery is None:
        point = prior_point(model_id, [], gs.target_far)
        if p.threshold is not None:
            point = type(point)(p.threshold, p.margin or 0.0, "set by the user")
    else:
        g = Gallery.open(gallery)
        try:
            point = gallery_point(g, g.identities(), gs.matcher, gs.target_far, p.threshold, p.margin)
        finally:
            g.close()
    return IndexMeta(model_id, dim, point.threshold, point.margin, point.source,
                     str(gallery) if gallery is not None else None)


def _write_page(out: Path, rows: list[dict], faces: dict[str, str], groups: list[dict], annotated: list[str],
                n_videos: int, gallery: Path | str | None, model_id: str, threshold: float,
                failed: list[dict[str, str]]) -> None:
    e = html.escape
    failed_html = "".join(f"<li>{e(f['video'])}: {e(f['reason'])}</li>" for f in failed)
    row_html = "\n".join(f"<tr><td>{e(r['identity'])}</td><td>{e(r['source'])}</td><td>{r['first_seen_s']}</td>"
                         f"<td>{r['last_seen_s']}</td><td>{r['seconds_on_screen']}</td><td>{r['appearances']}</td></tr>"
                         for r in rows)
    face_html = "\n".join(f'<figure style="display:inline-block"><img class="face" src="{e(p)}" alt="{e(i)}">'
                          f"<figcaption>{e(i)}</figcaption></figure>" for i, p in faces.items()) or "<p>none</p>"
    unknown_html = "\n".join(
        f"<tr><td>{e(g['label'])}: {g['appearances']} appearance{'s' if g['appearances'] != 1 else ''} in "
        f"{g['videos']} video{'s' if g['videos'] != 1 else ''}</td><td>{g['appearances']}</td><td>{g['videos']}</td>"
        f"<td>{e(g['first_seen']['video'])} at {g['first_seen']['time_s']} s</td>"
        f"<td>{e(g['last_seen']['video'])} at {g['last_seen']['time_s']} s</td><td>"
        + (f'<img class="unknown-face" src="{e(g["best_face"])}" alt="{e(g["label"])}">' if g["best_face"] else "")
        + "</td></tr>" for g in groups) or '<tr><td colspan="6">none</td></tr>'
    files = ["events.jsonl", "timeline.csv", "timeline.png", "faces.index", *annotated]
    n_ids = len({r["identity"] for r in rows})
    page = _PAGE.format(failed=f'<h2>Videos not analysed</h2><ul id="failed">{failed_html}</ul>' if failed else "",
                        n_videos=n_videos, n_ids=n_ids, ies="y" if n_ids == 1 else "ies",
                        gallery=e(str(gallery)), model=e(model_id), rows=row_html, faces=face_html,
                        threshold=f"{threshold:.4f}", unknown=unknown_html,
                        files="".join(f'<li><a href="{e(f)}">{e(f)}</a></li>' for f in files))
    with open_private(out / "report.html", "w", encoding="utf-8") as f:
        f.write(page)
