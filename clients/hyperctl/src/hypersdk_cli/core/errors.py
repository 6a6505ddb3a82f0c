"""Exit codes scripts can branch on, and the one error type every failure becomes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``hyperctl``'s exit status means (docs/cli.md, "Exit codes")."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_AUTHENTICATED = 3
    FORBIDDEN = 4
    NOT_FOUND = 5
    CONFLICT = 6
    UNAVAILABLE = 7
    EXPORT_FAILED = 8
    NOT_IMPLEMENTED = 9
    AUDIT_INVALID = 10
    INTERRUPTED = 130


# The API's stable error codes (docs/contracts.md) and what a script should see.
EXIT_OF_CODE: dict[str, ExitCode] = {
    "invalid_request": ExitCode.USAGE,
    "validation_failed": ExitCode.USAGE,
    "payload_too_large": ExitCode.USAGE,
    "unauthenticated": ExitCode.NOT_AUTHENTICATED,
    "invalid_credentials": ExitCode.NOT_AUTHENTICATED,
    "forbidden": ExitCode.FORBIDDEN,
    "not_found": ExitCode.NOT_FOUND,
    "conflict": ExitCode.CONFLICT,
    "rate_limited": ExitCode.UNAVAILABLE,
    "request_timeout": ExitCode.UNAVAILABLE,
    "upstream_unavailable": ExitCode.UNAVAILABLE,
    "service_busy": ExitCode.UNAVAILABLE,
    "not_implemented": ExitCode.NOT_IMPLEMENTED,
}
# When the body is no envelope (a proxy's page, an empty 502), the status decides.
EXIT_OF_STATUS: dict[int, ExitCode] = {
    400: ExitCode.USAGE,
    401: ExitCode.NOT_AUTHENTICATED,
    403: ExitCode.FORBIDDEN,
    404: ExitCode.NOT_FOUND,
    409: ExitCode.CONFLICT,
    413: ExitCode.USAGE,
    422: ExitCode.USAGE,
    408: ExitCode.UNAVAILABLE,
    429: ExitCode.UNAVAILABLE,
    501: ExitCode.NOT_IMPLEMENTED,
    502: ExitCode.UNAVAILABLE,
    503: ExitCode.UNAVAILABLE,
    504: ExitCode.UNAVAILABLE,
}


class CliError(Exception):
    """A failure to report as one line; its text never holds a credential.

    ``code`` is the API's error code when the platform answered with an envelope, else a
    code of hyperctl's own (``connection_failed``, ``tls_failed``, ``bad_response``, ...).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        exit_code: ExitCode = ExitCode.ERROR,
        request_id: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.request_id = request_id
        self.status = status

    def line(self) -> str:
        """The line printed on stderr: ``error: <code>: <message> (request <id>)``."""
        text = f"error: {self.code}: {self.message}"
        if self.request_id:
            text += f" (request {self.request_id})"
        return text


def api_error(status: int, body: object) -> CliError:
    """The error an API answer stands for: its envelope if it has one, else its status."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or "error")
        message = str(error.get("message") or f"HTTP {status}.")
        request_id = error.get("request_id")
        exit_code = EXIT_OF_CODE.get(code) or EXIT_OF_STATUS.get(status, ExitCode.ERROR)
        return CliError(
            code,
            message,
            exit_code=exit_code,
            request_id=str(request_id) if request_id else None,
            status=status,
        )
    return CliError(
        "http_error",
        f"The server answered HTTP {status} without an error envelope.",
        exit_code=EXIT_OF_STATUS.get(status, ExitCode.ERROR),
        status=status,
    )
