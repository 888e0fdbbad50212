"""Enrolment from an uploaded clip: the ``gallery add --video`` path (``pipeline/gallery/video.py``: the one
person's best, varied frames, refused when a second face is in view), then the photo quality gates, the
recalibration and the live gallery swap of a photo enrolment.

The clip is decoded in memory (OpenCV's FFmpeg reads from the request's bytes: nothing is spooled to a
temporary file), at most ``http.max_clip_s`` seconds of frames of at most ``http.max_upload_pixels``, since
its sampled frames are held while the person's track is found. Templates are labelled
``upload:CLIP#frame=N``, never a path on the server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from daemon.http.errors import ApiError
from daemon.http.faces import FaceService, check_name

MAX_FACES = 8  # as gallery add --video


def clip_label(filename: str | None) -> Path:
    base = re.sub(r"[^\w.\-]+", "_", Path(filename or "").name)[:80] or "clip"
    return Path(f"upload:{base}")


def enrol_clip(faces: FaceService, name: str, data: bytes, filename: str | None) -> dict[str, Any]:
    """Enrol ``name`` (new, or more faces of someone enrolled) from one clip; ApiError 422 naming why not."""
    from pipeline.gallery.enrol import QualityGates, enrol
    from pipeline.gallery.video import video_faces

    name = check_name(name)
    if not data:
        raise ApiError(422, "no clip in the request: send one video file")
    settings = faces.daemon.settings
    gs, http, label = settings.gallery, settings.http, clip_label(filename)
    g = faces.open_gallery()
    try:
        name = check_name(name, g.names())
        with faces.still_engine() as engine:
            try:
                results, summary = video_faces(engine, label, MAX_FACES, gs.min_face_px, data=data,
                                               max_s=http.max_clip_s, max_pixels=http.max_upload_pixels)
            except ValueError as exc:
                raise ApiError(422, str(exc)) from None
            engine.cache = g.cache()
            with g.writing():  # the person and the recalibration in one commit
                result = enrol(engine, g, name, [], QualityGates(gs.min_face_px, gs.min_blur, gs.min_prob),
                               gs.target_far, results, refuse_shared=True)
    finally:
        g.close()
    skipped = [{"face": Path(s["path"]).name, "reason": s["reason"]} for s in result["skipped_files"]]
    if not result["added"]:
        raise ApiError(422, f"no face of the clip was enrolled for {name}", faces=skipped)
    version = faces.changed("enrolled", identity=name, added=result["added"])
    return {"identity": name, "added": result["added"], "rejected": skipped, "clip": label.name.removeprefix("upload:"),
            "sampled_frames": summary["sampled_frames"], "frames_taken": summary["faces_taken"],
            "threshold": result["threshold"], "margin": result["margin"], "gallery_version": version}
