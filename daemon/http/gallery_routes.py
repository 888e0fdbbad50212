"""Routes that read and change the gallery: recognise a photo, list, enrol, erase and rename people. A change
leaves its figures on the request for the audit log (``daemon/http/guard.py`` writes the line)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from daemon.http.body import uploaded_photos
from daemon.http.context import HttpContext
from daemon.http.errors import PHOTO_BODY, ApiError, sees_paths
from daemon.http.faces import FaceService


class Rename(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The identity's new name.")


def router(ctx: HttpContext) -> APIRouter:
    r = APIRouter()
    faces, http = ctx.faces, ctx.http

    @r.post("/v1/recognize", summary="Every face in an uploaded photo: box, landmarks, identity or unknown, "
            "score, margin and the threshold used (the daemon's decision rule).", openapi_extra=PHOTO_BODY)
    async def recognize(request: Request, liveness: bool = False) -> dict[str, Any]:
        """``?liveness=1``: each face also gets its live score (MiniFASNet) and whether it reaches the threshold."""
        photos = await uploaded_photos(request, http)
        if len(photos) != 1:
            raise ApiError(422, f"send exactly one photo, got {len(photos)}")
        return await run_in_threadpool(faces.recognize, photos[0][1], liveness)

    @r.post("/v1/verify", summary="1:1 verification: two photos (the same person?) or one photo and "
            "?identity=NAME (is it them?), scored against the gallery's calibrated threshold.",
            openapi_extra=PHOTO_BODY)
    async def verify(request: Request, identity: str | None = None) -> dict[str, Any]:
        photos = await uploaded_photos(request, http)
        want = 1 if identity is not None else 2
        if len(photos) != want:
            raise ApiError(422, f"send {'one photo and ?identity=NAME' if want == 1 else 'two photos'} "
                           f"(or {'two photos without ?identity' if want == 1 else 'one photo and ?identity=NAME'}), "
                           f"got {len(photos)} photo(s)")
        return await run_in_threadpool(verify_faces, faces, [data for _, data in photos], identity)

    @r.get("/v1/identities", summary="The people in the gallery, with their template counts and drift figures.")
    async def identities(request: Request) -> dict[str, Any]:
        found = await run_in_threadpool(faces.identities, sees_paths(request))
        if ctx.drift is not None:  # the page's "recent score" column
            for p in found["identities"]:
                p["drift"] = ctx.drift.summary(p["name"])
        return found

    @r.get("/v1/identities/{name}", summary="One person: templates, photos' labels, and drift: the recent median "
           "of the scores they were named at, its margin to the threshold, their refusals, whether flagged.")
    async def person(name: str, request: Request) -> dict[str, Any]:
        found = await run_in_threadpool(faces.person, name, sees_paths(request))
        drift = ctx.drift.summary(found["name"]) if ctx.drift is not None else None
        state = faces.daemon.gallery_state()
        own = state.own.get(found["name"])  # raised by "not this person": it decides for them
        return {**found, "threshold": round(state.threshold, 4),
                "own_threshold": None if own is None else round(own, 4),
                "threshold_in_use": round(max(state.threshold, own if own is not None else state.threshold), 4),
                "drift": drift, "drift_kept": ctx.drift is not None}

    @r.post("/v1/identities/{name}/photos", summary="Enrol one or more photos of a person (created if new); "
            "each rejected photo comes back with the quality gate's reason. The daemon uses the new gallery "
            "before this returns.", openapi_extra=PHOTO_BODY)
    async def enrol(name: str, request: Request) -> dict[str, Any]:
        photos = await uploaded_photos(request, http)
        result = await run_in_threadpool(faces.enrol, name, photos)
        request.state.audit = {"added": result["added"], "rejected": result["rejected"],
                               "gallery_version": result["gallery_version"]}
        return result

    @r.delete("/v1/identities/{name}", summary="Erase a person: identity, templates and cached embeddings of "
              "their photos (as 'gallery remove').")
    async def erase(name: str, request: Request) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            centroid = faces.centroid(name) if ctx.unknowns is not None else None
            result = faces.erase(name)
            if centroid is not None:  # their faces kept while they were a stranger go too
                gone = ctx.unknowns.matching(centroid, faces.daemon.gallery_state().threshold)
                result["visitors_erased"] = sum(ctx.unknowns.delete(v) for v in gone)
            return result

        result = await run_in_threadpool(work)
        request.state.audit = {"templates": result["templates"], "gallery_version": result["gallery_version"],
                               **({"visitors_erased": result["visitors_erased"]} if "visitors_erased" in result
                                  else {})}
        return result

    @r.patch("/v1/identities/{name}", summary="Rename a person.")
    async def rename(name: str, body: Rename, request: Request) -> dict[str, Any]:
        result = await run_in_threadpool(faces.rename, name, body.name)
        request.state.audit = {"to": result["to"], "gallery_version": result["gallery_version"]}
        return result

    return r


def verify_faces(faces: FaceService, photos: list[bytes], identity: str | None) -> dict[str, Any]:
    """The score of the first photo's subject face against the second's, or against ``identity``'s centroid,
    and the decision at the threshold the daemon names people at (its calibration)."""
    centroid = faces.centroid(identity) if identity is not None else None  # a 404 before any photo work
    first, info = faces.embed_face(photos[0], "photo 1")
    if centroid is not None:
        other, infos = centroid, [info]
    else:
        other, info2 = faces.embed_face(photos[1], "photo 2")
        infos = [info, info2]
    state = faces.daemon.gallery_state()
    score = float(np.dot(first, other))
    same = score >= state.threshold
    decision = ("match" if same else "no match") if identity is not None else ("same" if same else "different")
    return {"score": round(score, 4), "threshold": round(state.threshold, 4), "same": same, "decision": decision,
            "identity": identity, "faces": [{"box": i.get("box"), "face_px": i.get("face_px")} for i in infos],
            "model": faces.daemon.embedder.model_id, "gallery_version": state.version}
