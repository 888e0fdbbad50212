"""A long video's chunks (``analyze_chunks``) stitched back into one video's part, as if analysed whole.

Chunk k owns media time ``[start_k, start_{k+1})`` and reads ``overlap`` seconds past it. At each boundary:
chunk k's tracks that start in its overlap are dropped (chunk k+1 has them from their start); a track of
chunk k still alive at the boundary is matched to a track of chunk k+1 that starts within the overlap while
the first is still alive, when their embeddings (each the track's quality-weighted mean) are the same
person at the analysis's calibrated threshold: greedy, best pair first, one to one. A matched pair (and a
chain of them across several boundaries) is one track: chunk k's events in the overlap and its truncating
``track.ended`` dropped, the later chunks' face events that repeat one already made for the track (same
topic and identity) dropped, one ``track.ended`` with the whole track's first and last frame, one index
row. Tracks are then numbered 1.. in order of first appearance. ``source.status``: the first chunk's
``opened``, the last chunk's end, any chunk's error.

What cannot be the same as a whole run: the cooldown of ``face.recognized`` (a chunk starts with none, so a
person seen again within ``cooldown_s`` of a boundary is announced again), and track ids (a whole run's
count tracks that never got confirmed as well). Appearances (timeline), tracks and decisions are.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from daemon.profiles.analyze_jobs import VideoJob, VideoPart
from daemon.sinks import dumps
from pipeline.face_index import TrackRow
from pipeline.face_measures import iou
from pipeline.names import file_stem

FACE_TOPICS = ("face.recognized", "face.unknown")
TERMINAL = ("eof", "error", "stopped")


@dataclass(eq=False)
class _Track:
    chunk: int
    track_id: int
    first_time: float
    last_time: float
    ended: dict[str, Any] | None = None
    row: TrackRow | None = None
    prev: _Track | None = None
    next: _Track | None = None
    announced: set[tuple[str, str | None]] = field(default_factory=set)  # the chain's, kept on its root

    @property
    def root(self) -> _Track:
        t = self
        while t.prev is not None:
            t = t.prev
        return t

    def links(self) -> list[_Track]:
        out, t = [], self.root
        while t is not None:
            out.append(t)
            t = t.next
        return out


def _tracks(events: list[dict[str, Any]], rows: list[TrackRow], chunk: int) -> dict[int, _Track]:
    out: dict[int, _Track] = {}
    for e in events:
        if e.get("topic") in (*FACE_TOPICS, "track.ended"):
            tid = int(e["track_id"])
            t = out.get(tid)
            at = float(e.get("first_time") if e["topic"] == "track.ended" else e.get("pts") or 0.0)
            end = float(e.get("last_time") if e["topic"] == "track.ended" else e.get("pts") or 0.0)
            if t is None:
                t = out[tid] = _Track(chunk, tid, at, end)
            if e["topic"] == "track.ended":
                t.ended, t.first_time, t.last_time = e, at, end
    for r in rows:
        if r.track_id in out:
            out[r.track_id].row = r
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


Boxes = dict[int, dict[int, tuple[float, float, float, float]]]  # track id -> frame -> box
SAME_FACE_IOU = 0.5  # boxes of two chunks' tracks on the same frames overlapping this much: the same face


def match_boundary(before: dict[int, _Track], after: dict[int, _Track], boundary: float, read_end: float,
                   threshold: float, boxes_before: Boxes | None = None,
                   boxes_after: Boxes | None = None) -> tuple[list[tuple[_Track, _Track, float]], set[int]]:
    """The pairs (chunk k's track, chunk k+1's, their boxes' mean overlap on the frames both chunks read) that
    are one track, and chunk k's tracks to drop. A pair is one track when it overlaps in time and either its
    boxes are the same face on the same frames or its embeddings the same person at ``threshold`` (a track
    too short for an embedding is matched by its boxes alone); best pairs first, one to one."""
    dropped = {t.track_id for t in before.values() if t.first_time >= boundary - 1e-6}
    alive = [t for t in before.values() if t.track_id not in dropped and t.last_time >= boundary - 1e-6]
    starting = [t for t in after.values() if t.first_time < read_end]
    ba, bb = boxes_before or {}, boxes_after or {}
    cands = []
    for i, a in enumerate(alive):
        for j, b in enumerate(starting):
            if b.first_time > a.last_time + 1e-6:
                continue
            fa, fb = ba.get(a.track_id, {}), bb.get(b.track_id, {})
            common = fa.keys() & fb.keys()
            overlap = sum(iou(fa[f], fb[f]) for f in common) / len(common) if common else 0.0
            cos = cosine(a.row.embedding, b.row.embedding) if a.row is not None and b.row is not None else None
            if overlap >= SAME_FACE_IOU or (cos is not None and cos >= threshold):
                cands.append((overlap >= SAME_FACE_IOU, overlap, -1.0 if cos is None else cos, i, j))
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for _, overlap, _, i, j in sorted(cands, reverse=True):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((alive[i], starting[j], overlap))
    return out, dropped


def _dominant(links: list[_Track]) -> _Track:
    """The link whose decision the whole track takes: the one judged on most faces (the later on a tie)."""
    return max(reversed(links), key=lambda t: int((t.ended or {}).get("faces_judged") or (t.row.faces if t.row
                                                                                          else 0)))


def _ended(links: list[_Track], new_id: int, max_faces: int) -> dict[str, Any]:
    first, last, dom = links[0].ended or {}, links[-1].ended or {}, _dominant(links).ended or {}
    seen = last.get("frames_seen") or 0
    for a, b in itertools.pairwise(links):  # frames of a before b began (the overlap counted once)
        ea, eb = a.ended or {}, b.ended or {}
        seen += max(0, (ea.get("frames_seen") or 0) - max(0, (ea.get("last_frame") or 0) - (eb.get("first_frame") or 0)
                                                          + 1))
    return {**last, "track_id": new_id, "identity": dom.get("identity"), "best_score": dom.get("best_score"),
            "decision": dom.get("decision"), "undecided_reason": dom.get("undecided_reason"),
            "faces_judged": min(max_faces, sum(int((t.ended or {}).get("faces_judged") or 0) for t in links)),
            "sized_s": round(sum(float((t.ended or {}).get("sized_s") or 0.0) for t in links), 3),
            "first_frame": first.get("first_frame"), "first_time": first.get("first_time"), "frames_seen": seen}


def _row(links: list[_Track], new_id: int, max_faces: int) -> tuple[TrackRow | None, tuple[int, str] | None]:
    """The chain's index row (embedding: the links' face-weighted mean, renormalised; the best face of all)
    and where its face crop is: (chunk, the chunk's file name)."""
    had = [t for t in links if t.row is not None]
    if not had:
        return None, None
    rows = [t.row for t in had if t.row is not None]
    dom = _dominant(links).row or rows[-1]
    best = max(had, key=lambda t: t.row.best_quality if t.row else 0.0)
    mean = sum(r.faces * np.asarray(r.embedding, dtype=np.float64) for r in rows)
    norm = float(np.linalg.norm(mean))
    emb = (mean / norm if norm > 0 else rows[-1].embedding).astype(np.float32)
    face = None
    if dom.decision == "unknown":
        face = next(((t.chunk, t.row.face_file) for t in [best, *had] if t.row and t.row.face_file), None)
    b = best.row
    assert b is not None
    row = TrackRow(dom.video, dom.path, new_id, rows[0].start_s, rows[-1].end_s, b.best_frame, b.best_time_s,
                   b.best_quality, b.best_box, dom.decision, dom.identity, dom.score,
                   min(max_faces, sum(r.faces for r in rows)), emb)
    if face is not None:
        row.face_file = f"faces/{file_stem(row.video)}-t{new_id}.jpg"
    return row, face


def _keep_status(e: dict[str, Any], chunk: int, first: int, last: int) -> bool:
    status = e.get("status")
    return status == "error" or (chunk == first and status not in TERMINAL) or (chunk == last and status in TERMINAL)


def stitch(pieces: list[tuple[VideoJob, VideoPart]], threshold: float, max_faces: int = 12) -> VideoPart:
    """One video's part from its chunks' parts (in chunk order; a failed chunk is reported, the others kept);
    ``max_faces``: the faces a track is judged on at most (``pipeline.max_embeds_per_track``)."""
    job0 = pieces[0][0]
    ok = [(j, p) for j, p in pieces if p.error is None]
    if not ok:
        return replace(pieces[0][1], index=job0.video_index, error=_errors(pieces))
    events = {j.chunk: [json.loads(line) for line in p.event_lines] for j, p in ok}
    tracks = {j.chunk: _tracks(events[j.chunk], p.rows, j.chunk) for j, p in ok}
    jobs = {j.chunk: j for j, _ in ok}
    boxes = {j.chunk: p.boxes for j, p in ok}
    dropped: dict[int, set[int]] = {c: set() for c in tracks}
    for c in sorted(tracks):
        if c + 1 in tracks:
            nxt = jobs[c + 1]
            pairs, dropped[c] = match_boundary(tracks[c], tracks[c + 1], nxt.start_s, jobs[c].end_s or nxt.start_s,
                                               threshold, boxes[c], boxes[c + 1])
            for a, b, _ in pairs:
                a.next, b.prev = b, a
    roots = sorted((t for c in sorted(tracks) for t in tracks[c].values() if t.prev is None
                    and t.track_id not in dropped[c]), key=lambda t: (t.first_time, t.chunk, t.track_id))
    new_id = {id(t): k + 1 for k, t in enumerate(roots)}
    lines = _events(events, tracks, dropped, jobs, new_id, max_faces)
    rows: list[TrackRow] = []
    files: dict[str, bytes] = {}
    faces = {j.chunk: p.files for j, p in ok}
    for root in roots:
        row, face = _row(root.links(), new_id[id(root)], max_faces)
        if row is not None:
            rows.append(row)
            if face is not None and row.face_file and face[1] in faces[face[0]]:
                files[row.face_file] = faces[face[0]][face[1]]
    spans: dict[str, list[tuple[float, float]]] = {}
    for line in lines:
        e = json.loads(line)
        if e.get("topic") == "track.ended" and e.get("identity") is not None:
            spans.setdefault(e["identity"], []).append((float(e["first_time"]), float(e["last_time"])))
    name = f"{job0.source_id}.annotated.mp4"
    video = annotated_concat([(j, p.files[name]) for j, p in ok if name in p.files])
    if video is not None:
        files[name] = video
    model = next(((p.model_id, p.dim) for _, p in ok if p.model_id), ("", 0))
    return VideoPart(job0.video_index, job0.source_id, max(p.exit_code for _, p in pieces), lines, spans, rows,
                     files, model[0], model[1], ",".join(sorted({p.worker for _, p in ok if p.worker})),
                     _errors(pieces))


def _errors(pieces: list[tuple[VideoJob, VideoPart]]) -> str | None:
    text = "; ".join(f"chunk {j.chunk + 1}/{j.chunks} (from {j.start_s:g} s): {p.error}" for j, p in pieces
                     if p.error is not None)
    return text[:300] or None


def _events(events: dict[int, list[dict[str, Any]]], tracks: dict[int, dict[int, _Track]],
            dropped: dict[int, set[int]], jobs: dict[int, VideoJob], new_id: dict[int, int],
            max_faces: int) -> list[str]:
    """The chunks' events in chunk order, filtered and renumbered (see the module's docstring)."""
    first, last = min(tracks), max(tracks)
    lines: list[str] = []
    for c in sorted(tracks):
        boundary = jobs[c + 1].start_s if c + 1 in jobs else None
        for e in events[c]:
            topic = e.get("topic")
            if topic == "source.status":
                if _keep_status(e, c, first, last):
                    lines.append(dumps(e))
                continue
            if topic not in (*FACE_TOPICS, "track.ended"):
                lines.append(dumps(e))  # the daemon's stats
                continue
            t = tracks[c][int(e["track_id"])]
            if t.track_id in dropped[c]:
                continue
            root = t.root
            tid = new_id[id(root)]
            if topic == "track.ended":
                if t.next is None:
                    whole = _ended(root.links(), tid, max_faces) if t.prev is not None else {**e, "track_id": tid}
                    lines.append(dumps(whole))
                continue
            if t.next is not None and boundary is not None and float(e.get("pts") or 0.0) >= boundary - 1e-6:
                continue  # the next chunk has this part of the track
            key = (topic, e.get("identity"))
            if t.prev is not None and key in root.announced:
                continue  # said already, by an earlier chunk's part of the same track
            root.announced.add(key)
            lines.append(dumps({**e, "track_id": tid}))
    return lines


def annotated_concat(pieces: list[tuple[VideoJob, bytes]]) -> bytes | None:
    """The chunks' annotated MP4s as one, each cut at the end of the time it owns: packets copied (PyAV),
    nothing re-encoded (OpenCV's MPEG-4 writer makes no B-frames, so a cut after any packet decodes)."""
    import av

    if not pieces:
        return None
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream: Any = None
        offset = 0
        for j, data in pieces:
            with av.open(io.BytesIO(data)) as src:
                s_in = src.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(s_in)
                # the annotated video has a frame per frame read (its own clock may differ): cut by count
                keep = None if j.own_end_s is None else round((j.own_end_s - j.start_s) * j.fps)
                top = offset
                for n, pkt in enumerate(p for p in src.demux(s_in) if p.pts is not None):
                    if keep is not None and n >= keep:
                        break
                    dts = pkt.dts if pkt.dts is not None else pkt.pts
                    pkt.pts, pkt.dts = pkt.pts + offset, dts + offset
                    top = max(top, pkt.pts + (pkt.duration or 1))
                    pkt.stream = stream
                    out.mux(pkt)
                offset = top
    return buf.getvalue()
