"""``/v1/unknowns``: the unknown visitors a running daemon keeps (``daemon/stores/unknowns.py``): list them, see
their faces, name one (enrol its faces through the photo quality gates, then the live gallery swap) or erase
one. Enrolling and erasing leave their figures on the request for the audit log."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from daemon.http.context import HttpContext
from daemon.http.errors import ApiError

_ID = re.compile(r"^[0-9a-f]{8}$")


class Enrol(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The name the visitor is enrolled under (a new identity).")


def _with_urls(v: dict[str, Any]) -> dict[str, Any]:
    return {**v, "faces": [f"/v1/unknowns/{v['id']}/faces/{n}.jpg" for n in v["faces"]]}


def router(ctx: HttpContext) -> APIRouter:
    r = APIRouter()
    faces = ctx.faces

    def store() -> Any:
        if ctx.unknowns is None:
            raise ApiError(404, "this daemon keeps no unknown visitors (unknowns.enabled, and a gallery file)")
        return ctx.unknowns

    def visitor(visitor_id: str) -> dict[str, Any]:
        v = store().visitor(visitor_id) if _ID.match(visitor_id) else None
        if v is None:
            raise ApiError(404, f"no unknown visitor {visitor_id[:40]!r} (erased, enrolled or expired)")
        return v

    @r.get("/v1/unknowns", summary="The unknown visitors: appearances (count), cameras, first and last seen, "
           "face URLs; the most recently seen first.")
    async def unknowns() -> dict[str, Any]:
        if ctx.unknowns is None:
            return {"enabled": False, "visitors": []}
        found = await run_in_threadpool(ctx.unknowns.visitors)
        return {"enabled": True, "visitors": [_with_urls(v) for v in found]}

    @r.get("/v1/unknowns/{visitor_id}", summary="One unknown visitor, with the URLs of their best faces.")
    async def one(visitor_id: str) -> dict[str, Any]:
        return _with_urls(await run_in_threadpool(visitor, visitor_id))

    @r.get("/v1/unknowns/{visitor_id}/faces/{n}.jpg", summary="One of a visitor's faces (JPEG).",
           response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def face(visitor_id: str, n: int) -> Response:
        data = await run_in_threadpool(store().face, visitor_id, n) if _ID.match(visitor_id) else None
        if data is None:
            raise ApiError(404, f"no face {n} of an unknown visitor {visitor_id[:40]!r}")
        return Response(data, media_type="image/jpeg")

    @r.post("/v1/unknowns/{visitor_id}/enrol", summary="Name a visitor: their faces are enrolled as a new "
            "identity (quality gates, recalibration, live swap), then the visitor is erased.")
    async def enrol(visitor_id: str, body: Enrol, request: Request) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            name = faces.check_new_person(body.name)  # 422 bad name, 409 taken: nothing changed
            visitor(visitor_id)
            photos = [(f"visitor-{visitor_id}-{n}.jpg", data) for n, data in store().faces(visitor_id)]
            result = faces.enrol(name, photos)  # 422 when no face passes the gates: the visitor is kept
            store().delete(visitor_id)
            return {**result, "visitor": visitor_id}

        result = await run_in_threadpool(work)
        request.state.audit = {"name": result["identity"], "added": result["added"],
                               "gallery_version": result["gallery_version"]}
        return result

    @r.delete("/v1/unknowns/{visitor_id}", summary="Erase a visitor: every appearance and face, overwritten.")
    async def erase(visitor_id: str, request: Request) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            v = visitor(visitor_id)
            store().delete(visitor_id)
            return {"erased": visitor_id, "appearances": v["count"]}

        result = await run_in_threadpool(work)
        request.state.audit = {"appearances": result["appearances"]}
        return result

    return r
