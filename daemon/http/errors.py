"""How the API refuses: one JSON shape for every error; and what every route may ask of a request."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a one-line message (and optional details)."""

    def __init__(self, status: int, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


def error_response(status: int, message: str, **detail: Any) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, **detail}}, status_code=status,
                        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def sees_paths(request: Request) -> bool:
    """Server paths (gallery file, photos, video files) only for a caller who sent the token; others get labels."""
    return bool(getattr(request.state, "token_ok", False))


# The photo routes read their body themselves (size limit, timeout, forms parsed in memory); the spec still says
# what they take, so clients and fuzzers see it.
PHOTO_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "photo": {"type": "string", "format": "binary", "description": "An image file (any field name)."}}}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}}}}}
