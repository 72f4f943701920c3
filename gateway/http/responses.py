"""JSON responses encoded by msgspec, and the error body every route uses."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, TooLarge

_encoder = msgspec.json.Encoder()


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def error_body(error: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = [{"path": d.path, "problem": d.problem} for d in error.details]
    if error.temporary:
        body["temporary"] = True
    return body


def error_response(error: GatewayError) -> JSON:
    headers = {"WWW-Authenticate": "Bearer"} if error.http_status == 401 else None
    return JSON(error_body(error), status_code=error.http_status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(_too_large(int(declared), limit))
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(_too_large(size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return (
        f"The request body is {size}+ bytes; the limit is {limit} (AGENTMEM_MAX_BODY_BYTES). "
        "Send fewer events per request."
    )
