"""Routes that follow the running daemon: status, the event stream and recent events, snapshots, metrics.
They only read counters, the live view and the hub: a client never holds a camera up."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from daemon.http.context import HttpContext
from daemon.http.errors import ApiError, sees_paths

Topics = Annotated[list[str] | None, Query(description="Topic prefixes to keep (repeatable); none: every topic.")]


def router(ctx: HttpContext) -> APIRouter:
    r = APIRouter()
    hub, view, http = ctx.hub, ctx.view, ctx.http

    @r.get("/v1/status", summary="Sources (state, frames/s, drops, faces in view), queue depths, latency, "
           "gallery, uptime.")
    async def status(request: Request) -> dict[str, Any]:
        return ctx.status(sees_paths(request))

    @r.get("/v1/events", summary="Server-Sent Events: every event as it is published (filter with ?topic= "
           "prefixes; Last-Event-ID resumes).", response_class=StreamingResponse)
    async def events(request: Request, topic: Topics = None) -> StreamingResponse:
        hub.attach(asyncio.get_running_loop())
        last = request.headers.get("last-event-id", "").strip()
        # Only ASCII digits: str.isdigit() also takes '²', which int() refuses.
        stream = hub.stream(tuple(topic or ()), int(last) if last.isascii() and last.isdigit() else None)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @r.get("/v1/events/recent", summary="The most recent events, newest last (the page's first list).")
    async def recent(topic: Topics = None, limit: Annotated[int, Query(ge=1, le=10000)] = 50,
                     after: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        return {"events": hub.recent(tuple(topic or ()), after, limit)}

    @r.get("/v1/sources/{source_id}/snapshot.jpg", summary="The source's latest frame with each face's box "
           "and name drawn; X-Facestream-Faces lists the names (null: unknown).", response_class=Response)
    async def snapshot(source_id: str) -> Response:
        if source_id not in view.sources:
            raise ApiError(404, f"no source named {source_id[:100]!r}")
        shot = await run_in_threadpool(view.snapshot, source_id, http.snapshot_max_width)
        if shot is None:
            raise ApiError(503, f"source {source_id!r} has not delivered a frame yet")
        jpg, names = shot
        return Response(jpg, media_type="image/jpeg", headers={"X-Facestream-Faces": json.dumps(names)})

    @r.get("/metrics", summary="Prometheus metrics.", response_class=Response)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await run_in_threadpool(ctx.metrics.render), media_type=CONTENT_TYPE_LATEST)

    return r
