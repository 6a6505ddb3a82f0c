"""The platform's operations as hyperctl uses them, on the :class:`PlatformApi` port.

Every method answers the API's JSON unchanged (what ``--output json`` prints), or raises
:class:`CliError` built from the API's error envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from hypersdk_cli.core.errors import CliError, ExitCode, api_error
from hypersdk_cli.core.models import StoredSession
from hypersdk_cli.core.session import Clock, Credentials, session_of, utc_now
from hypersdk_cli.ports.outbound import ApiReply, PlatformApi

NEXT_PAGE_HEADER = "x-next-page-token"
VMS_PAGE = 500
Query = Mapping[str, str | int | None]


def segment(value: str) -> str:
    """One path segment: a ``/`` in it is data, not a separator."""
    return quote(value, safe="")


def slashed_path(value: str, what: str) -> str:
    """A path of several segments (a VM id, a secret path), refusing empty, . and .. parts."""
    parts = value.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise CliError(
            "invalid_argument",
            f"{what} must be segments separated by '/', none empty, '.' or '..'.",
            exit_code=ExitCode.USAGE,
        )
    return "/".join(segment(part) for part in parts)


def _params(query: Query) -> dict[str, str | int]:
    return {key: value for key, value in query.items() if value is not None}


class Platform:
    """The operations of the HTTP API (docs/contracts.md), authenticated by ``credentials``."""

    def __init__(self, api: PlatformApi, credentials: Credentials) -> None:
        self._api = api
        self.credentials = credentials

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        query: Query | None = None,
        headers: Mapping[str, str] | None = None,
        session_only: bool = False,
    ) -> ApiReply:
        """One authenticated call; an error answer raises :class:`CliError`.

        ``session_only`` calls (logout, sessions) carry the session even if an API key is set.
        """
        credential = (
            self.credentials.session_headers() if session_only else self.credentials.headers()
        )
        reply = self._api.call(
            method,
            path,
            json=json,
            params=_params(query or {}),
            headers={**credential, **(headers or {})},
        )
        by_session = session_only or not self.credentials.uses_api_key
        if reply.status >= 300:  # noqa: PLR2004 - httpx follows no redirect: none is expected
            error = api_error(reply.status, reply.body)
            if reply.status == 401 and by_session:  # noqa: PLR2004
                self.credentials.forget()  # revoked or ended: never send it again
                error.message += " Run 'hyperctl login'."
            raise error
        return reply

    def body(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one call."""
        return self.call(method, path, **kwargs).body

    # ---- auth ------------------------------------------------------------------------------
    def me(self) -> Any:
        """GET /auth/me."""
        return self.body("GET", "/auth/me")

    def logout(self) -> None:
        """POST /auth/logout: the session ends on the server."""
        self.call("POST", "/auth/logout", session_only=True)

    def list_sessions(self) -> Any:
        """GET /auth/sessions: the caller's live sessions (never their tokens)."""
        return self.body("GET", "/auth/sessions", session_only=True)

    def revoke_session(self, session_id: str) -> None:
        """DELETE /auth/sessions/{id}: end one of the caller's sessions."""
        self.call("DELETE", f"/auth/sessions/{segment(session_id)}", session_only=True)

    # ---- vms and providers -----------------------------------------------------------------
    def list_vms(self, *, provider: str | None, limit: int | None) -> list[Any]:
        """Every VM (all pages), or the first ``limit``."""
        items: list[Any] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            page_size = VMS_PAGE if limit is None else min(VMS_PAGE, limit - len(items))
            reply = self.call(
                "GET",
                "/vms",
                query={"provider": provider, "page_token": token, "limit": page_size},
            )
            items += list(reply.body or [])
            token = reply.headers.get(NEXT_PAGE_HEADER)
            if not token or (limit is not None and len(items) >= limit):
                return items
            if token in seen or not reply.body:  # a server leading in circles never ends
                raise CliError("bad_response", "The server's VM pages lead in a circle.")
            seen.add(token)

    def get_vm(self, vm_id: str) -> Any:
        """GET /vms/{provider}/{vm}."""
        return self.body("GET", f"/vms/{slashed_path(vm_id, 'A VM id')}")

    def list_providers(self) -> Any:
        """GET /providers."""
        return self.body("GET", "/providers")

    def get_provider(self, name: str) -> Any:
        """GET /providers/{name}."""
        return self.body("GET", f"/providers/{segment(name)}")

    def add_provider(self, settings: Mapping[str, Any]) -> Any:
        """POST /providers."""
        return self.body("POST", "/providers", json=dict(settings))

    def update_provider(self, name: str, settings: Mapping[str, Any]) -> Any:
        """PUT /providers/{name}: type, config and credential_ref all replaced."""
        return self.body("PUT", f"/providers/{segment(name)}", json=dict(settings))

    def delete_provider(self, name: str) -> None:
        """DELETE /providers/{name}."""
        self.call("DELETE", f"/providers/{segment(name)}")

    # ---- exports and jobs ------------------------------------------------------------------
    def export(
        self, *, provider: str, vm: str, disk_format: str, compress: bool, key: str | None
    ) -> Any:
        """POST /exports: the queued job."""
        body = {"provider": provider, "vm": vm, "format": disk_format, "compress": compress}
        headers = {"Idempotency-Key": key} if key else None
        return self.body("POST", "/exports", json=body, headers=headers)

    def list_jobs(self, query: Query) -> Any:
        """GET /jobs, newest first."""
        return self.body("GET", "/jobs", query=query)

    def get_job(self, job_id: str) -> Any:
        """GET /jobs/{id}, with its history."""
        return self.body("GET", f"/jobs/{segment(job_id)}")

    def cancel_job(self, job_id: str) -> Any:
        """POST /jobs/{id}/cancel."""
        return self.body("POST", f"/jobs/{segment(job_id)}/cancel")

    # ---- users -----------------------------------------------------------------------------
    def list_users(self) -> Any:
        """GET /users."""
        return self.body("GET", "/users")

    def add_user(self, fields: Mapping[str, Any]) -> Any:
        """POST /users."""
        return self.body("POST", "/users", json=dict(fields))

    def get_user(self, username: str) -> Any:
        """GET /users/{username}."""
        return self.body("GET", f"/users/{segment(username)}")

    def update_user(self, username: str, fields: Mapping[str, Any]) -> Any:
        """PATCH /users/{username}."""
        return self.body("PATCH", f"/users/{segment(username)}", json=dict(fields))

    def delete_user(self, username: str) -> None:
        """DELETE /users/{username}."""
        self.call("DELETE", f"/users/{segment(username)}")

    def unlock_user(self, username: str) -> None:
        """POST /users/{username}/unlock."""
        self.call("POST", f"/users/{segment(username)}/unlock")

    # ---- api keys --------------------------------------------------------------------------
    def list_api_keys(self, *, owner: str | None) -> Any:
        """GET /api-keys."""
        return self.body("GET", "/api-keys", query={"owner": owner})

    def create_api_key(self, fields: Mapping[str, Any]) -> Any:
        """POST /api-keys: the only answer that holds the key."""
        return self.body("POST", "/api-keys", json=dict(fields))

    def rotate_api_key(self, key_id: str, *, grace_seconds: int) -> Any:
        """POST /api-keys/{id}/rotate."""
        return self.body(
            "POST", f"/api-keys/{segment(key_id)}/rotate", json={"grace_seconds": grace_seconds}
        )

    def revoke_api_key(self, key_id: str) -> None:
        """DELETE /api-keys/{id}."""
        self.call("DELETE", f"/api-keys/{segment(key_id)}")

    # ---- secrets ---------------------------------------------------------------------------
    def list_secrets(self) -> Any:
        """GET /secrets: metadata only."""
        return self.body("GET", "/secrets")

    def put_secret(self, path: str, data: Mapping[str, str]) -> Any:
        """PUT /secrets/{path}: the answer is metadata, never the value."""
        return self.body(
            "PUT", f"/secrets/{slashed_path(path, 'A secret path')}", json={"data": dict(data)}
        )

    def delete_secret(self, path: str) -> None:
        """DELETE /secrets/{path}."""
        self.call("DELETE", f"/secrets/{slashed_path(path, 'A secret path')}")

    def rotate_secret(self, path: str, data: Mapping[str, str]) -> Any:
        """POST /secrets/{path}/rotate: the new value current, the previous kept a while."""
        return self.body(
            "POST",
            f"/secrets/{slashed_path(path, 'A secret path')}/rotate",
            json={"data": dict(data)},
        )

    # ---- audit -----------------------------------------------------------------------------
    def audit_events(self, query: Query) -> Any:
        """GET /audit/events in chain order, filtered (``query``: filters, cursor, limit)."""
        return self.body("GET", "/audit/events", query=query)

    def audit_verify(self) -> Any:
        """GET /audit/verify."""
        return self.body("GET", "/audit/verify")

    def audit_start_verification(self) -> Any:
        """POST /audit/verifications: a full verification, started in the background."""
        return self.body("POST", "/audit/verifications")

    def audit_verification(self, run_id: str) -> Any:
        """GET /audit/verifications/{id}: its progress, then its outcome."""
        return self.body("GET", f"/audit/verifications/{quote(run_id, safe='')}")

    def audit_verifications(self, *, limit: int) -> Any:
        """GET /audit/verifications: the newest first."""
        return self.body("GET", "/audit/verifications", query={"limit": limit})

    def audit_holds(self) -> Any:
        """GET /audit/holds: legal holds, lifted ones too."""
        return self.body("GET", "/audit/holds")

    def audit_place_hold(self, reason: str) -> Any:
        """POST /audit/holds (system:configure): retention cuts nothing while it stands."""
        return self.body("POST", "/audit/holds", json={"reason": reason})

    def audit_lift_hold(self, hold_id: str) -> Any:
        """DELETE /audit/holds/{id} (system:configure)."""
        return self.body("DELETE", f"/audit/holds/{quote(hold_id, safe='')}")

    def audit_quarantine(self, *, after_number: int, limit: int) -> Any:
        """GET /audit/quarantine: events audit refused to chain as genuine."""
        return self.body(
            "GET", "/audit/quarantine", query={"after_number": after_number, "limit": limit}
        )

    def audit_export(self, query: Query | None = None) -> str:
        """GET /audit/export: the bundle's JSON Lines, or (``format`` jsonl, csv) the entries'."""
        bundle = self.body("GET", "/audit/export", query=query)
        if not isinstance(bundle, str):
            raise CliError("bad_response", "The audit export was not JSON Lines or CSV.")
        return bundle


def log_in(
    api: PlatformApi,
    *,
    server: str,
    username: str,
    password: str,
    clock: Clock = utc_now,
) -> StoredSession:
    """POST /auth/login: a new session (the caller stores it)."""
    reply = api.call("POST", "/auth/login", json={"username": username, "password": password})
    if reply.status != 200:  # noqa: PLR2004 - HTTP OK
        raise api_error(reply.status, reply.body)
    return session_of(server, reply.body, now=clock())
