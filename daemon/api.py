"""The HTTP API (FastAPI) of a running daemon: recognise a photo, enrol and erase people, sources and events
live, Prometheus metrics, and the web page at ``/``.

Handlers never hold a pipeline lock while they work: they read counters, the live view and the hub,
and run photo work in the server's thread pool, so a slow client cannot slow a camera down. Every
error is JSON ``{"error": {"status": N, "message": "..."}}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Match

from daemon.api_audit import ApiAudit
from daemon.face_service import ApiError, FaceService
from daemon.http_body import photos_from, read_body
from daemon.http_guard import RequestGuard

if TYPE_CHECKING:
    from daemon.runner import Daemon

log = structlog.get_logger(__name__)
WEB_DIR = Path(__file__).with_name("web")
# The photo routes read their body themselves (size limit, timeout, forms parsed in memory); the spec still says
# what they take, so clients and fuzzers see it.
_PHOTO_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "photo": {"type": "string", "format": "binary", "description": "An image file (any field name)."}}}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}}}}}
Topics = Annotated[list[str] | None, Query(description="Topic prefixes to keep (repeatable); none: every topic.")]


class Rename(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The identity's new name.")


def _error(status: int, message: str, **detail: Any) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, **detail}}, status_code=status,
                        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def _sees_paths(request: Request) -> bool:
    """Server paths (gallery file, photos, video files) only for a caller who sent the token; others get labels."""
    return bool(getattr(request.state, "token_ok", False))


def make_app(daemon: Daemon, status_of: Callable[[Daemon, bool], dict[str, Any]], audit: ApiAudit | None = None) -> Any:
    """The API wrapped in its request guard (the guard is returned as the ASGI app; ``.app`` is FastAPI's)."""
    http = daemon.settings.http
    service = FaceService(daemon)
    hub, view, metrics = daemon.event_hub, daemon.live_view, daemon.metrics
    assert hub is not None and view is not None and metrics is not None

    app = FastAPI(title="facestream", version="1", description="Face recognition daemon: photos, gallery, "
                  "sources, events and metrics. Host, Origin and token checks: daemon/http_guard.py.",
                  docs_url=None, redoc_url=None)  # Swagger UI would load from a CDN: /openapi.json only

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.audit_error = exc.message
        return _error(exc.status, exc.message, **exc.detail)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        e = exc.errors()[0]
        request.state.audit_error = f"invalid request: {e['msg']}"[:200]
        return _error(422, f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("http_request_failed", path=request.url.path[:200], error=str(exc)[:500])
        return _error(500, f"internal error ({type(exc).__name__}); the daemon's log says more")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > http.max_upload_bytes:  # JSON bodies too
            response: Response = _error(413, f"request body of {declared} bytes is over the {http.max_upload_bytes} "
                                        "byte limit (http.max_upload_mb)")
        else:
            response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' blob: data:; "
                                                           "frame-ancestors 'none'")
        return response

    async def upload(request: Request) -> list[tuple[str | None, bytes]]:
        body = await read_body(request, http.max_upload_bytes, http.body_timeout_s)
        # Parsed off the event loop: a form of many parts must not hold every other request up.
        return await run_in_threadpool(photos_from, request.headers.get("content-type", ""), body, http.max_parts)

    # ---- photos and the gallery -----------------------------------------------------------------------
    @app.post("/v1/recognize", summary="Every face in an uploaded photo: box, landmarks, identity or unknown, "
              "score, margin and the threshold used (the daemon's decision rule).", openapi_extra=_PHOTO_BODY)
    async def recognize(request: Request) -> dict[str, Any]:
        photos = await upload(request)
        if len(photos) != 1:
            raise ApiError(422, f"send exactly one photo, got {len(photos)}")
        return await run_in_threadpool(service.recognize, photos[0][1])

    @app.get("/v1/identities", summary="The people in the gallery, with their template counts.")
    async def identities(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(service.identities, _sees_paths(request))

    @app.post("/v1/identities/{name}/photos", summary="Enrol one or more photos of a person (created if new); "
              "each rejected photo comes back with the quality gate's reason. The daemon uses the new gallery "
              "before this returns.", openapi_extra=_PHOTO_BODY)
    async def enrol(name: str, request: Request) -> dict[str, Any]:
        photos = await upload(request)
        result = await run_in_threadpool(service.enrol, name, photos)
        request.state.audit = {"added": result["added"], "rejected": result["rejected"],
                               "gallery_version": result["gallery_version"]}
        return result

    @app.delete("/v1/identities/{name}", summary="Erase a person: identity, templates and cached embeddings of "
                "their photos (as 'gallery remove').")
    async def erase(name: str, request: Request) -> dict[str, Any]:
        result = await run_in_threadpool(service.erase, name)
        request.state.audit = {"templates": result["templates"], "gallery_version": result["gallery_version"]}
        return result

    @app.patch("/v1/identities/{name}", summary="Rename a person.")
    async def rename(name: str, body: Rename, request: Request) -> dict[str, Any]:
        result = await run_in_threadpool(service.rename, name, body.name)
        request.state.audit = {"to": result["to"], "gallery_version": result["gallery_version"]}
        return result

    # ---- sources, events, metrics ---------------------------------------------------------------------
    @app.get("/v1/status", summary="Sources (state, frames/s, drops, faces in view), queue depths, latency, "
             "gallery, uptime.")
    async def status(request: Request) -> dict[str, Any]:
        return status_of(daemon, _sees_paths(request))

    @app.get("/v1/events", summary="Server-Sent Events: every event as it is published (filter with ?topic= "
             "prefixes; Last-Event-ID resumes).", response_class=StreamingResponse)
    async def events(request: Request, topic: Topics = None) -> StreamingResponse:
        hub.attach(asyncio.get_running_loop())
        last = request.headers.get("last-event-id", "").strip()
        # Only ASCII digits: str.isdigit() also takes '²', which int() refuses.
        stream = hub.stream(tuple(topic or ()), int(last) if last.isascii() and last.isdigit() else None)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/v1/events/recent", summary="The most recent events, newest last (the page's first list).")
    async def recent(topic: Topics = None, limit: Annotated[int, Query(ge=1, le=10000)] = 50,
                     after: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        return {"events": hub.recent(tuple(topic or ()), after, limit)}

    @app.get("/v1/sources/{source_id}/snapshot.jpg", summary="The source's latest frame with each face's box "
             "and name drawn; X-Facestream-Faces lists the names (null: unknown).", response_class=Response)
    async def snapshot(source_id: str) -> Response:
        if source_id not in view.sources:
            raise ApiError(404, f"no source named {source_id!r}")
        shot = await run_in_threadpool(view.snapshot, source_id, http.snapshot_max_width)
        if shot is None:
            raise ApiError(503, f"source {source_id!r} has not delivered a frame yet")
        jpg, names = shot
        return Response(jpg, media_type="image/jpeg", headers={"X-Facestream-Faces": json.dumps(names)})

    @app.get("/metrics", summary="Prometheus metrics.", response_class=Response)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown(rest: str, request: Request) -> None:
        allowed = sorted({m for r in app.routes if isinstance(r, APIRoute) and r.name != "unknown"
                          and r.matches(request.scope)[0] == Match.PARTIAL for m in r.methods})
        if allowed:
            raise ApiError(405, f"{request.method} is not allowed on {request.url.path}: use {', '.join(allowed)}")
        raise ApiError(404, f"no endpoint /v1/{rest}")

    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return RequestGuard(app, http, audit)
