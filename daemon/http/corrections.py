"""Gallery corrections through the API: "not this person" on a recent event (``/v1/events/{seq}/reject``),
merge and split identities (``/v1/identities/{name}/merge|split``).

Each checks everything it can before it writes (422 for an event that named nobody, 404 for an event or
person that is not there, 409 for a new name taken), writes through the same code as ``facestream gallery
reject|merge|split`` (one transaction with the new calibration), then the running daemon swaps the gallery
in before the request returns, as an enrolment does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from daemon.http.context import HttpContext
from daemon.http.errors import ApiError
from daemon.http.faces import FaceService, existing_name
from pipeline import names
from pipeline.gallery import GalleryError


def _gallery_error(exc: GalleryError) -> ApiError:
    text = str(exc)
    if "no identity named" in text:
        return ApiError(404, text.split(" in ")[0] + " in the gallery")
    if "already exists" in text or "too like" in text:
        return ApiError(409, text)
    return ApiError(422, text)


def reject_event(faces: FaceService, hub: Any, named: Any, seq: int) -> dict[str, Any]:
    """Record the face of recent event ``seq`` as not the identity it named; raise their own threshold."""
    from pipeline.gallery.negatives import reject

    event = hub.event(seq)
    if event is None:
        raise ApiError(404, f"no recent event {seq}: it has left the recent events (http.recent_events) or was "
                       "never sent")
    topic, body = event
    if topic != "face.recognized" or not body.get("identity"):
        raise ApiError(422, f"event {seq} is a {topic} that named nobody: only a face.recognized can be rejected")
    identity, source, track = body["identity"], body.get("source"), body.get("track_id")
    vec = named.face(source, track, identity) if named is not None and track is not None else None
    if vec is None:
        raise ApiError(404, f"the face of event {seq} is no longer kept (the daemon keeps those of its last "
                       "named tracks, in memory)")
    with faces.open_for_write() as g:
        try:
            result = reject(g, identity, vec, f"event {seq}: {source} track {track} at {body.get('time')}")
        except GalleryError as exc:  # erased or renamed since the event
            raise _gallery_error(exc) from None
    version = faces.changed("rejected", identity=identity, event=seq, threshold=result["threshold"])
    return {"rejected": seq, **{k: v for k, v in result.items() if k != "version"}, "gallery_version": version}


def merge_identities(faces: FaceService, into: str, other: str) -> dict[str, Any]:
    from pipeline.gallery.regroup import merge as merge_people

    into, other = existing_name(into), existing_name(other)
    if into == other:
        raise ApiError(422, f"cannot merge {names.clip(into)!r} into itself: give two different identities")
    with faces.open_for_write() as g:
        try:
            result = merge_people(g, into, other, faces.daemon.settings.gallery.target_far)
        except GalleryError as exc:
            raise _gallery_error(exc) from None
    version = faces.changed("merged", identity=into, merged=other, templates=result["templates"])
    return {**{k: v for k, v in result.items() if k != "version"}, "gallery_version": version}


def split_identity(faces: FaceService, name: str, positions: list[int], new: str) -> dict[str, Any]:
    from daemon.http.faces import check_name
    from pipeline.gallery.regroup import split as split_person

    name, new = existing_name(name), check_name(new)
    if not positions:
        raise ApiError(422, "templates: give at least one template position (1-based, as GET /v1/identities "
                       "lists the photos)")
    with faces.open_for_write() as g:
        try:
            result = split_person(g, name, positions, new, faces.daemon.settings.gallery.target_far)
        except GalleryError as exc:
            raise _gallery_error(exc) from None
    version = faces.changed("split", identity=name, into=result["into"], templates=result["templates"])
    return {**{k: v for k, v in result.items() if k != "version"}, "gallery_version": version}


class Merge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    other: str = Field(description="The identity merged in: its templates, photos and negatives move, it is removed.")


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")

    templates: list[int] = Field(description="Positions (1-based, as GET /v1/identities lists the photos) of the "
                                 "templates that become the new identity.")
    name: str = Field(description="The new identity's name.")


def router(ctx: HttpContext) -> APIRouter:
    r = APIRouter()
    faces = ctx.faces

    @r.post("/v1/events/{seq}/reject", summary="Not this person: the face of a recent face.recognized event is "
            "recorded as a negative of the identity it named, whose own threshold rises above it (no body).")
    async def reject(seq: int, request: Request) -> dict[str, Any]:
        result = await run_in_threadpool(reject_event, faces, ctx.hub, ctx.named, seq)
        request.state.audit = {"identity": result["identity"], "threshold": result["threshold"],
                               "gallery_version": result["gallery_version"]}
        return result

    @r.post("/v1/identities/{name}/merge", summary="Merge another identity into this one (one person under two "
            "names): one transaction, recalibrated, live swap.")
    async def merge(name: str, body: Merge, request: Request) -> dict[str, Any]:
        result = await run_in_threadpool(merge_identities, faces, name, body.other)
        request.state.audit = {"merged": result["merged"], "gallery_version": result["gallery_version"]}
        return result

    @r.post("/v1/identities/{name}/split", summary="Split templates off into a new identity (two people under "
            "one name): one transaction, recalibrated, live swap.")
    async def split(name: str, body: Split, request: Request) -> dict[str, Any]:
        result = await run_in_threadpool(split_identity, faces, name, body.templates, body.name)
        request.state.audit = {"into": result["into"], "templates": result["templates"],
                               "gallery_version": result["gallery_version"]}
        return result

    return r
