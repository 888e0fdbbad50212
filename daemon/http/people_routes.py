"""Routes of the page's people panels beyond photos: enrol someone from a short clip, and today's attendance
(present, absent, unexpected) when the daemon keeps an attendance book. A clip enrolment leaves its figures on
the request for the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from daemon.http.body import photos_from, read_body
from daemon.http.clips import enrol_clip
from daemon.http.context import HttpContext
from daemon.http.errors import ApiError

CLIP_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "clip": {"type": "string", "format": "binary", "description": "One video file (any field name)."}}}},
    "video/mp4": {"schema": {"type": "string", "format": "binary"}}}}}


async def _clip(request: Request, ctx: HttpContext) -> tuple[str | None, bytes]:
    """The one clip of a request: a raw ``video/*`` (or octet-stream) body, or the one file of a form."""
    http = ctx.http
    body = await read_body(request, http.max_upload_bytes, http.body_timeout_s)
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        files = await run_in_threadpool(photos_from, request.headers["content-type"], body, http.max_parts)
        if len(files) != 1:
            raise ApiError(422, f"send exactly one clip, got {len(files)} files")
        return files[0]
    if kind and not (kind.startswith("video/") or kind == "application/octet-stream"):
        raise ApiError(415, f"send a video (video/* or multipart/form-data with one file), not {kind[:100]}")
    return request.query_params.get("filename"), body


def router(ctx: HttpContext) -> APIRouter:
    r = APIRouter()

    @r.post("/v1/identities/{name}/video", summary="Enrol a person (created if new) from a short clip of them "
            "alone, as 'gallery add --video': their best, varied frames through the photo quality gates; the "
            "daemon uses the new gallery before this returns.", openapi_extra=CLIP_BODY)
    async def enrol_video(name: str, request: Request) -> dict[str, Any]:
        filename, data = await _clip(request, ctx)
        result = await run_in_threadpool(enrol_clip, ctx.faces, name, data, filename)
        request.state.audit = {"added": result["added"], "rejected": len(result["rejected"]),
                               "gallery_version": result["gallery_version"]}
        return result

    @r.get("/v1/attendance/today", summary="Today's attendance (local date): who on the roster was present "
           "(first seen, camera, score), who is absent, who was recognised but is not on the roster.")
    async def attendance_today() -> dict[str, Any]:
        if ctx.attendance is None:
            return {"enabled": False}
        day = dt.date.today().isoformat()
        try:
            rep = await run_in_threadpool(ctx.attendance, day)
        except Exception as exc:  # the book closed under a request at shutdown, a database lost
            raise ApiError(503, f"the attendance book cannot be read now: {type(exc).__name__}") from None
        return {"enabled": True, **rep}

    return r
