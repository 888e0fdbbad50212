"""Request bodies for the HTTP API: read with a size limit, photos taken from multipart forms in memory.

Starlette's form parser spools every part over 1 MB to a temporary file; the API promises to write
nothing outside the gallery, and its bodies are capped at ``http.max_upload_mb`` anyway, so a form is
parsed from memory with the standard library's MIME parser instead.
"""

from __future__ import annotations

import asyncio
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from daemon.config.http import HttpConfig
from daemon.http.errors import ApiError


async def read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The whole body; ApiError 413 as soon as it is known to exceed ``limit`` bytes, 408 when it has not
    arrived within ``timeout_s`` (a client that never finishes its body holds nothing of ours)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared)} bytes is over the {limit} byte limit "
                       "(http.max_upload_mb)")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body is over the {limit} byte limit (http.max_upload_mb)")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s (http.body_timeout_s)") from None
    return b"".join(chunks)


def photos_from(content_type: str, body: bytes, max_parts: int = 64) -> list[tuple[str | None, bytes]]:
    """(filename, bytes) of every file in a ``multipart/form-data`` body, or the body itself when it is sent
    raw (``Content-Type: image/...`` or ``application/octet-stream``). A form of more than ``max_parts``
    parts is refused before it is parsed: the MIME parser's cost grows with the parts, not the bytes."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind != "multipart/form-data":
        if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
            raise ApiError(415, f"send an image (image/* or multipart/form-data with files), not {kind[:100]}")
        return [(None, body)] if body else []
    boundary = _boundary(content_type)
    if boundary is None:
        raise ApiError(400, "multipart/form-data without a boundary")
    parts = body.count(b"--" + boundary) - 1  # delimiters, the closing one included
    if parts > max_parts:
        raise ApiError(413, f"multipart form with {parts} parts; at most {max_parts} (http.max_parts)")
    msg: Message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise ApiError(400, "malformed multipart/form-data body")
    out = []
    for part in msg.iter_parts():
        if part.get_param("filename", header="content-disposition") is None:
            continue  # a plain form field, not a file
        data = part.get_payload(decode=True)
        out.append((part.get_filename(), data if isinstance(data, bytes) else b""))
    return out


def _boundary(content_type: str) -> bytes | None:
    msg = Message()
    msg["content-type"] = content_type
    b = msg.get_param("boundary")
    return b.encode("latin-1") if isinstance(b, str) and 0 < len(b) <= 200 else None


async def uploaded_photos(request: Request, http: HttpConfig) -> list[tuple[str | None, bytes]]:
    """The photos of a request (its raw body, or every file of a form): size-limited, timed, parsed off the
    event loop (a form of many parts must not hold every other request up)."""
    body = await read_body(request, http.max_upload_bytes, http.body_timeout_s)
    return await run_in_threadpool(photos_from, request.headers.get("content-type", ""), body, http.max_parts)
