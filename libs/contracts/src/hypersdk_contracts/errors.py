"""Stable error codes shared by the HTTP API and request/reply on the bus."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from hypersdk_contracts.base import Message


class ErrorCode(StrEnum):
    """Machine-readable error codes; each maps to one HTTP status."""

    INVALID_REQUEST = "invalid_request"
    VALIDATION_FAILED = "validation_failed"
    UNAUTHENTICATED = "unauthenticated"
    INVALID_CREDENTIALS = "invalid_credentials"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    NOT_IMPLEMENTED = "not_implemented"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    SERVICE_BUSY = "service_busy"  # the service is up but at capacity: retry after a pause


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.VALIDATION_FAILED: 422,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.NOT_IMPLEMENTED: 501,
    ErrorCode.UPSTREAM_UNAVAILABLE: 503,
    ErrorCode.SERVICE_BUSY: 503,
}


class ErrorBody(Message):
    """An error as it crosses a boundary: a stable code and a sentence, never a secret."""

    code: ErrorCode = Field(description="Stable machine-readable error code.")
    message: str = Field(description="One human sentence; never contains a credential.")
    retry_after_seconds: int | None = Field(
        default=None,
        ge=1,
        description="With rate_limited or service_busy: seconds to wait before retrying.",
    )


class ServiceError(Exception):
    """A domain error that maps to an error reply; its message is safe to show."""

    def __init__(
        self, code: ErrorCode, message: str, *, retry_after_seconds: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_seconds = retry_after_seconds

    def body(self) -> ErrorBody:
        """The error as a message."""
        return ErrorBody(
            code=self.code, message=self.message, retry_after_seconds=self.retry_after_seconds
        )

    @classmethod
    def from_body(cls, body: ErrorBody) -> ServiceError:
        """The error an error reply stands for, ``retry_after_seconds`` included."""
        return cls(body.code, body.message, retry_after_seconds=body.retry_after_seconds)
