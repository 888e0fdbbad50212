"""``gallery add --video``: enrol one person from a clip of them, not from still photos.

The clip is sampled a few times a second; faces are found with the stills detector (the gallery's own
resampling), tracked, and the dominant track (the face seen most) must be the only person: a clip in
which a second face is in view for a fifth of the sampled frames or more is refused, since a gallery
template of the wrong person lets a stranger in. From the dominant track the best faces are taken
(size x frontality, through the gallery's quality gates), varied: at least ``min_gap_s`` apart and not
near-copies of a face already taken.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np

from pipeline.face_measures import face_quality, laplacian_blur
from pipeline.gallery.stills import FaceResult, StillEmbedder
from pipeline.track import IoUTracker
from pipeline.types import Detection, Frame

SAMPLE_FPS = 5.0
SECOND_PERSON_SHARE = 0.2  # a second face in view on this share of sampled frames: not one person
NEAR_COPY = 0.97  # cosine similarity above which a face adds nothing to ones already taken


def _sample(video: Path, fps: float, data: bytes | None = None, max_s: float | None = None,
            max_pixels: int | None = None) -> list[tuple[int, float, np.ndarray]]:
    """Frames ``fps`` times a second; ``data``: the clip's bytes, decoded in memory (``video`` is its label)."""
    # OpenCV reads the stream through this object without holding a reference: it must outlive ``cap``.
    stream = io.BytesIO(data) if data is not None else None
    cap = (cv2.VideoCapture(stream, cv2.CAP_FFMPEG, []) if stream is not None
           else cv2.VideoCapture(str(video), cv2.CAP_FFMPEG))
    if not cap.isOpened():
        raise ValueError(f"{video}: not a video, or a format FFmpeg cannot open")
    rate = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    seconds = cap.get(cv2.CAP_PROP_FRAME_COUNT) / rate
    if max_pixels is not None and w * h > max_pixels:
        cap.release()
        raise ValueError(f"{video}: frames of {w}x{h} exceed {max_pixels} pixels")
    if max_s is not None and seconds > max_s:
        cap.release()
        raise ValueError(f"{video}: {seconds:.1f} s long; at most {max_s:g} s")
    step = max(1, round(rate / fps))
    out, i = [], 0
    try:
        while True:
            ok = cap.grab()
            if not ok:
                break
            if i % step == 0:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None and max_pixels is not None and bgr.shape[0] * bgr.shape[1] > max_pixels:
                    raise ValueError(f"{video}: frames of {bgr.shape[1]}x{bgr.shape[0]} exceed {max_pixels} pixels")
                if ok and bgr is not None:
                    out.append((i, i / rate, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            i += 1
            if max_s is not None and i / rate > max_s:  # a header that lied about the length
                raise ValueError(f"{video}: longer than {max_s:g} s")
    finally:
        cap.release()
        del stream
    if not out:
        raise ValueError(f"{video}: no decodable frame")
    return out


def video_faces(engine: StillEmbedder, video: Path, max_faces: int = 8, min_face_px: float = 40.0,
                min_gap_s: float = 0.4, data: bytes | None = None, max_s: float | None = None,
                max_pixels: int | None = None) -> tuple[list[FaceResult], dict]:
    """The dominant person's best faces as embedded results (``path`` is ``CLIP#frame=N``), and a summary;
    a ValueError with the reason when the clip shows nobody or several people. ``data``: an uploaded clip's
    bytes (``video`` is then only its label), with ``max_s`` and ``max_pixels`` bounding what is held."""
    if max_faces < 1:
        raise ValueError(f"--max-faces must be >= 1, got {max_faces}")
    if data is None and not video.is_file():
        raise ValueError(f"video file not found: {video}")
    frames = _sample(video, SAMPLE_FPS, data, max_s, max_pixels)
    tracker = IoUTracker(max_age_s=1.5 / SAMPLE_FPS + 0.6, embed_interval_s=0.0, confirm_hits=2,
                         min_embed_px=min_face_px, max_embeds=10**6)
    seen: dict[int, list[tuple[int, float, np.ndarray, Detection]]] = {}
    frames_with: dict[int, int] = {}
    for index, t, img in frames:
        dets = tuple(d for d in engine.detector.detect([img])[0] if min(d.width, d.height) >= min_face_px)
        out = tracker.update(Frame("enrol", index, t, 0.0, img, False), dets)
        for v in out.tracks:
            if v.detection is not None:
                seen.setdefault(v.track_id, []).append((index, t, img, v.detection))
                frames_with[v.track_id] = frames_with.get(v.track_id, 0) + 1
    if not seen:
        raise ValueError(f"{video}: no face of {min_face_px:g} px or more in {len(frames)} sampled frames")
    ranked = sorted(frames_with, key=lambda k: -frames_with[k])
    crowd = [k for k in ranked if frames_with[k] >= SECOND_PERSON_SHARE * len(frames)]
    if len(crowd) > 1:
        raise ValueError(f"{video}: shows {len(crowd)} people (faces in view on "
                         f"{', '.join(str(frames_with[k]) for k in crowd)} of {len(frames)} sampled frames); "
                         "enrolling from video needs a clip of the one person")
    track = seen[ranked[0]]
    by_quality = sorted(track, key=lambda x: -face_quality(x[3]))
    video_sha = hashlib.sha256(video.read_bytes() if data is None else data).hexdigest()
    chosen: list[FaceResult] = []
    taken_t: list[float] = []
    for index, t, img, det in by_quality:
        if len(chosen) >= max_faces:
            break
        if any(abs(t - u) < min_gap_s for u in taken_t):
            continue
        chip = engine.embedder.align(img, det)
        vec = engine.embedder.embed(chip[None])[0]
        if any(float(vec @ c.vec) > NEAR_COPY for c in chosen):  # type: ignore[operator]
            continue
        info = {"faces": 1, "prob": round(det.prob, 5), "face_px": round(min(det.width, det.height), 1),
                "blur": round(laplacian_blur(chip), 2), "box": [round(v, 1) for v in det.box],
                "width": int(img.shape[1]), "height": int(img.shape[0]), "frame": index}
        sha = hashlib.sha256(f"{video_sha}#frame={index}".encode()).hexdigest()
        chosen.append(FaceResult(Path(f"{video}#frame={index}"), sha, vec, None, info))
        taken_t.append(t)
    summary = {"video": str(video), "sampled_frames": len(frames), "people_seen": len(seen),
               "dominant_track_frames": frames_with[ranked[0]], "faces_taken": [c.info["frame"] for c in chosen]}
    return chosen, summary
