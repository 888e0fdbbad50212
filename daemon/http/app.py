"""The HTTP API (FastAPI) of a running daemon: its error handling, headers and the web page at ``/``, with the
routes of ``gallery_routes`` and ``live_routes``, all behind the request guard (``daemon/http/guard.py``).

Handlers never hold a pipeline lock while they work: they read counters, the live view and the hub,
and run photo work in the server's thread pool, so a slow client cannot slow a camera down. Every
error is JSON ``{"error": {"status": N, "message": "..."}}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match

from daemon.http import corrections, gallery_routes, live_routes, people_routes, unknown_routes
from daemon.http.audit import ApiAudit
from daemon.http.context import HttpContext
from daemon.http.errors import ApiError, error_response
from daemon.http.guard import RequestGuard

log = structlog.get_logger(__name__)
WEB_DIR = Path(__file__).with_name("web")
_error = error_response


def make_app(ctx: HttpContext, audit: ApiAudit | None = None) -> RequestGuard:
    """The API wrapped in its request guard (the guard is the ASGI app; ``.app`` is FastAPI's)."""
    http = ctx.http
    app = FastAPI(title="facestream", version="1", description="Face recognition daemon: photos, gallery, "
                  "sources, events and metrics. Host, Origin and token checks: daemon/http/guard.py.",
                  docs_url=None, redoc_url=None)  # Swagger UI would load from a CDN: /openapi.json only
    _handle_errors(app)

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

    routers = [gallery_routes.router(ctx), corrections.router(ctx), people_routes.router(ctx),
               unknown_routes.router(ctx), live_routes.router(ctx)]
    for router in routers:
        app.include_router(router)
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown(rest: str, request: Request) -> None:
        allowed = sorted({m for r in routes if r.matches(request.scope)[0] == Match.PARTIAL for m in r.methods})
        if allowed:
            raise ApiError(405, f"{request.method} is not allowed on {request.url.path[:100]}: use "
                           f"{', '.join(allowed)}")
        raise ApiError(404, f"no endpoint /v1/{rest[:100]}")

    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return RequestGuard(app, http, audit)


def _handle_errors(app: FastAPI) -> None:
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
