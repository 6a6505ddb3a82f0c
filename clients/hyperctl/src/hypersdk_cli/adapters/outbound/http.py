"""The platform's API over httpx, with TLS by CA bundle or by pinned certificate."""

from __future__ import annotations

import hmac
import json as jsonlib
import ssl
import time
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

import httpx

from hypersdk_cli.core.errors import CliError, ExitCode
from hypersdk_cli.core.text import printable
from hypersdk_cli.ports.outbound import ApiReply, PlatformApi

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 32 << 20
"""An answer larger than this is refused (a hostile or broken server cannot fill memory)."""
USER_AGENT = "hyperctl/0.1"
JSON_LINES = "application/x-ndjson"
"""A body passed on as text, never parsed: the audit export bundle."""
TEXT_BODIES = (JSON_LINES, "text/csv")
"""Bodies passed on as text, never parsed: audit exports (JSON Lines, CSV)."""


def normalized_pin(value: str) -> str:
    """A certificate fingerprint as lowercase hex without colons; CliError if it is none."""
    pin = value.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):  # noqa: PLR2004
        raise CliError(
            "invalid_argument",
            "A pinned certificate is its SHA-256 fingerprint: 64 hex digits (colons allowed).",
            exit_code=ExitCode.USAGE,
        )
    return pin


class PinMismatchError(ssl.SSLCertVerificationError):
    """The server's certificate is not the pinned one."""


def _check_pin(context: ssl.SSLContext, der: bytes | None) -> None:
    expected = getattr(context, "pin_sha256", None)
    if expected is None:
        return
    actual = sha256(der or b"").hexdigest()
    if not hmac.compare_digest(actual, expected):
        raise PinMismatchError(f"the server's certificate (SHA-256 {actual}) is not the pinned one")


class _PinnedSocket(ssl.SSLSocket):
    """Checks the pin as the last step of the handshake: before any request byte is sent."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        try:
            _check_pin(self.context, self.getpeercert(binary_form=True))
        except PinMismatchError:
            self.close()
            raise


class _PinnedObject(ssl.SSLObject):
    """The same check for TLS over a memory BIO (httpcore's TLS inside a proxy's TLS)."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _check_pin(self.context, self.getpeercert(binary_form=True))


def tls_context(*, ca_bundle: str | None, pin_sha256: str | None) -> ssl.SSLContext:
    """The TLS settings of a context.

    A CA bundle replaces the system's CAs. A pin makes the certificate itself the trust: with
    a pin alone, a self-signed certificate of the right fingerprint is accepted (and nothing
    else, whoever signed it); with both, the certificate must verify and match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if pin_sha256 is not None and ca_bundle is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin below is the verification
    elif ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(
                "tls_failed", f"Cannot read the CA bundle {ca_bundle}: {exc.__class__.__name__}."
            ) from exc
    else:
        context.load_default_certs()
    if pin_sha256 is not None:
        context.pin_sha256 = normalized_pin(pin_sha256)  # type: ignore[attr-defined]
        context.sslsocket_class = _PinnedSocket
        context.sslobject_class = _PinnedObject
    return context


def _failure(exc: httpx.HTTPError, server: str) -> CliError:
    """What a call that got no answer reports (never a header, so never a credential)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return CliError(
                "tls_failed",
                f"TLS with {server} failed: {printable(str(cause), one_line=True)}.",
            )
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return CliError(
            "timeout", f"{server} did not answer in time.", exit_code=ExitCode.UNAVAILABLE
        )
    reason = printable(str(exc), one_line=True) or exc.__class__.__name__
    return CliError(
        "connection_failed",
        f"Cannot reach {server}: {reason}.",
        exit_code=ExitCode.UNAVAILABLE,
    )


class HttpxPlatformApi(PlatformApi):
    """The API at ``server`` over HTTP(S); redirects are never followed.

    Each answer must arrive whole within ``timeout_seconds`` (not only between two reads: a
    server trickling bytes is cut off too) and be at most :data:`MAX_BODY_BYTES`.
    """

    def __init__(
        self,
        *,
        server: str,
        ca_bundle: str | None = None,
        pin_sha256: str | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._server = server.rstrip("/")
        self._timeout_seconds = timeout_seconds
        verify: ssl.SSLContext | bool = True
        if self._server.startswith("https://"):
            verify = tls_context(ca_bundle=ca_bundle, pin_sha256=pin_sha256)
        elif pin_sha256 is not None or ca_bundle is not None:
            raise CliError(
                "invalid_argument",
                f"A CA bundle or pinned certificate needs an https:// server, not {server}.",
                exit_code=ExitCode.USAGE,
            )
        self._client = httpx.Client(
            base_url=self._server + API_PREFIX,
            verify=verify,
            timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiReply:
        """One request; see :class:`PlatformApi`."""
        deadline = time.monotonic() + self._timeout_seconds
        try:
            with self._client.stream(
                method, path, json=json, params=params, headers=headers
            ) as response:
                raw = self._read(response, deadline)
                status, answer_headers = response.status_code, dict(response.headers)
        except httpx.HTTPError as exc:
            raise _failure(exc, self._server) from None
        return ApiReply(
            status=status, body=self._parse(status, raw, answer_headers), headers=answer_headers
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _read(self, response: httpx.Response, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise CliError(
                    "bad_response",
                    f"{self._server} sent an answer larger than {MAX_BODY_BYTES >> 20} MiB.",
                )
            if time.monotonic() > deadline:
                raise CliError(
                    "timeout",
                    f"{self._server} took over {self._timeout_seconds:g} s to answer.",
                    exit_code=ExitCode.UNAVAILABLE,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, status: int, raw: bytes, headers: Mapping[str, str]) -> Any:
        if not raw.strip():
            return None
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        if status < 300 and content_type.startswith(TEXT_BODIES):  # noqa: PLR2004 - success
            return raw.decode("utf-8", errors="strict")  # JSON Lines, CSV: passed on as they came
        try:
            return jsonlib.loads(raw)
        except (ValueError, RecursionError) as exc:
            if status >= 400:  # noqa: PLR2004 - an error page: the status tells enough
                return None
            raise CliError(
                "bad_response",
                f"{self._server} answered HTTP {status} with a body that is not JSON.",
            ) from exc
