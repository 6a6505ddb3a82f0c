"""The error envelope of the HTTP API."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from hypersdk_contracts.errors import HTTP_STATUS, ErrorCode

Send = Any


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str = Field(description="Stable machine-readable code.")
    message: str = Field(description="One human sentence.")
    request_id: str = Field(description="Request ID to quote when reporting it.")


class ErrorEnvelope(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


def envelope_bytes(code: ErrorCode, message: str, request_id: str) -> bytes:
    """The JSON body of an error."""
    return json.dumps(
        {"error": {"code": code.value, "message": message, "request_id": request_id}}
    ).encode()


async def send_error(
    send: Send,
    *,
    code: ErrorCode,
    message: str,
    request_id: str,
    status: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete error response on a raw ASGI channel.

    A 503 always says when to retry (``Retry-After: 1`` unless ``headers`` name a delay).
    """
    body = envelope_bytes(code, message, request_id)
    headers = list(headers or [])
    if code is ErrorCode.UPSTREAM_UNAVAILABLE and not any(k == b"retry-after" for k, _ in headers):
        headers.append((b"retry-after", b"1"))
    await send(
        {
            "type": "http.response.start",
            "status": status or HTTP_STATUS[code],
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
