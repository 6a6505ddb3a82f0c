"""In-memory fakes of hyperctl's ports: a small platform behind PlatformApi, a ConfigStore.

The platform answers like the gateway (docs/contracts.md): JSON bodies, error envelopes
with request ids, 204s, the X-Next-Page-Token header. Tests script it by changing its state
or by putting an answer in ``overrides`` for a method and path.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypersdk_cli.config import GlobalOptions, Target
from hypersdk_cli.core.models import CliConfig, StoredSession
from hypersdk_cli.inject import Wiring
from hypersdk_cli.ports.outbound import ApiReply, ConfigStore, PlatformApi

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MiB = 1 << 20


BUNDLE = '{"format": "hypersdk-audit-bundle/v1"}\n{"kind": "entry", "sequence": 1}\n'


@dataclass
class Call:
    method: str
    path: str
    json: Any
    params: dict[str, Any]
    headers: dict[str, str]


def envelope(status: int, code: str, message: str, request_id: str = "req-1") -> ApiReply:
    return ApiReply(
        status=status,
        body={"error": {"code": code, "message": message, "request_id": request_id}},
    )


@dataclass
class InMemoryPlatformApi(PlatformApi):
    """A platform with one admin, a demo lab and whatever the test adds."""

    password: str = "admin-password"
    tokens: dict[str, str] = field(default_factory=dict)  # token -> username
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> username
    vms: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    overrides: dict[tuple[str, str], ApiReply] = field(default_factory=dict)
    job_script: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per job id: the answers GET /jobs/{id} gives in turn (the last one repeats)."""
    closed: bool = False
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _job_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for name in ("web-01", "db-01"):
            self.vms.append(
                {
                    "id": f"demo-lab/{name}",
                    "name": name,
                    "provider": "demo-lab",
                    "cpus": 1,
                    "memory_mib": 512,
                    "state": "stopped",
                    "disks": [{"name": "disk0", "size_bytes": 64 * MiB, "format": "raw"}],
                    "nics": [],
                    "detailed": True,
                }
            )
        self.providers["demo-lab"] = {
            "name": "demo-lab",
            "type": "local",
            "config": {"directory": "demo"},
            "credential_ref": None,
            "created_at": NOW.isoformat(),
        }

    # ---- the port --------------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiReply:
        self.calls.append(Call(method, path, json, dict(params or {}), dict(headers or {})))
        if (method, path) in self.overrides:
            return self.overrides[(method, path)]
        if path == "/auth/login":
            return self._login(json)
        user = self._principal(dict(headers or {}))
        if user is None:
            return envelope(401, "unauthenticated", "A valid credential is required.")
        for pattern, route_method, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return handler(user, json, dict(params or {}), *match.groups())
        return envelope(404, "not_found", "No such route.")

    def close(self) -> None:
        self.closed = True

    # ---- helpers for tests -----------------------------------------------------------------
    def issue_token(self, username: str = "admin") -> str:
        token = f"tok-{next(self._ids)}-secret"
        self.tokens[token] = username
        return token

    def sent_headers(self) -> list[dict[str, str]]:
        return [c.headers for c in self.calls]

    # ---- routes ----------------------------------------------------------------------------
    def _principal(self, headers: dict[str, str]) -> str | None:
        key = headers.get("X-API-Key")
        if key is not None:
            return self.api_keys.get(key)
        auth = headers.get("Authorization", "")
        return self.tokens.get(auth.removeprefix("Bearer "))

    def _login(self, body: Any) -> ApiReply:
        if body.get("password") != self.password:
            return envelope(401, "invalid_credentials", "Wrong username or password.")
        token = self.issue_token(body["username"])
        return ApiReply(200, self._session_answer(token, body["username"]))

    def _session_answer(self, token: str, username: str) -> dict[str, Any]:
        return {
            "token": token,
            "expires_at": (NOW + timedelta(hours=12)).isoformat(),
            "user": {"username": username, "generation": 1, "source": "local"},
        }

    def _routes(self) -> list[tuple[str, str, Callable[..., ApiReply]]]:
        return [
            (r"/auth/me", "GET", self._me),
            (r"/auth/logout", "POST", self._logout),
            (r"/auth/refresh", "POST", self._refresh),
            (r"/vms", "GET", self._list_vms),
            (r"/vms/([^/]+)/([^/]+)", "GET", self._get_vm),
            (r"/providers", "GET", lambda *_: ApiReply(200, list(self.providers.values()))),
            (r"/providers/([^/]+)", "GET", self._get_provider),
            (r"/providers", "POST", self._add_provider),
            (r"/exports", "POST", self._export),
            (r"/jobs", "GET", lambda *_: ApiReply(200, list(self.jobs.values()))),
            (r"/jobs/([^/]+)", "GET", self._get_job),
            (r"/jobs/([^/]+)/cancel", "POST", self._cancel),
            (r"/api-keys", "POST", self._create_key),
            (r"/secrets/(.+)/rotate", "POST", self._rotate_secret),
            (r"/secrets/(.+)", "PUT", self._put_secret),
            (r"/secrets", "GET", self._list_secrets),
            (r"/audit/verify", "GET", self._verify),
            (r"/audit/quarantine", "GET", lambda *_: ApiReply(200, [])),
            (r"/auth/sessions", "GET", self._sessions),
            (r"/audit/export", "GET", self._audit_export),
        ]

    def _sessions(self, user: str, *_: Any) -> ApiReply:
        if "X-API-Key" in self.calls[-1].headers:
            return envelope(403, "forbidden", "Sessions are listed with a session token.")
        return ApiReply(200, [{"id": "s-1", "current": True}])

    def _me(self, user: str, *_: Any) -> ApiReply:
        return ApiReply(200, {"username": user, "roles": ["admin"], "kind": "session"})

    def _logout(self, user: str, *_: Any) -> ApiReply:
        token = self.calls[-1].headers["Authorization"].removeprefix("Bearer ")
        self.tokens.pop(token, None)
        return ApiReply(204, None)

    def _refresh(self, user: str, *_: Any) -> ApiReply:
        old = self.calls[-1].headers["Authorization"].removeprefix("Bearer ")
        self.tokens.pop(old)
        return ApiReply(200, self._session_answer(self.issue_token(user), user))

    def _list_vms(self, user: str, body: Any, params: dict[str, Any]) -> ApiReply:
        vms = [v for v in self.vms if params.get("provider") in (None, v["provider"])]
        start = int(params.get("page_token") or 0)
        page = vms[start : start + int(params.get("limit", 100))]
        end = start + len(page)
        headers = {"x-next-page-token": str(end)} if end < len(vms) else {}
        return ApiReply(200, page, headers)

    def _get_vm(self, user: str, body: Any, params: Any, provider: str, name: str) -> ApiReply:
        for vm in self.vms:
            if vm["id"] == f"{provider}/{name}":
                return ApiReply(200, vm)
        return envelope(404, "not_found", f"No VM {provider}/{name}.", "req-vm")

    def _get_provider(self, user: str, body: Any, params: Any, name: str) -> ApiReply:
        if name in self.providers:
            return ApiReply(200, self.providers[name])
        return envelope(404, "not_found", "No such provider.", "req-404")

    def _add_provider(self, user: str, body: Any, *_: Any) -> ApiReply:
        if body["name"] in self.providers:
            return envelope(409, "conflict", "The provider exists.", "req-409")
        self.providers[body["name"]] = {**body, "created_at": NOW.isoformat()}
        return ApiReply(201, self.providers[body["name"]])

    def _export(self, user: str, body: Any, *_: Any) -> ApiReply:
        job_id = f"job-{next(self._job_ids)}"
        self.jobs[job_id] = {
            "id": job_id,
            "provider": body["provider"],
            "vm": body["vm"],
            "format": body["format"],
            "status": "queued",
            "progress": 0,
            "artifacts": [],
            "requested_by": user,
            "created_at": NOW.isoformat(),
            "updated_at": NOW.isoformat(),
        }
        return ApiReply(202, self.jobs[job_id])

    def _get_job(self, user: str, body: Any, params: Any, job_id: str) -> ApiReply:
        script = self.job_script.get(job_id)
        if script:
            self.jobs[job_id] = {
                **self.jobs[job_id],
                **(script.pop(0) if len(script) > 1 else script[0]),
            }
        if job_id not in self.jobs:
            return envelope(404, "not_found", "No such job.", "req-job")
        return ApiReply(200, self.jobs[job_id])

    def _cancel(self, user: str, body: Any, params: Any, job_id: str) -> ApiReply:
        job = self.jobs[job_id]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return envelope(409, "conflict", "The job has ended.", "req-cancel")
        job.update(status="cancelled", cancel_requested_by=user)
        self.job_script.pop(job_id, None)
        return ApiReply(202, job)

    def _create_key(self, user: str, body: Any, *_: Any) -> ApiReply:
        key = f"hsk_{next(self._ids)}_very-secret-key"
        self.api_keys[key] = user
        view = {"id": "key-1", "name": body["name"], "owner": user, "scopes": body["scopes"]}
        return ApiReply(201, {"key": key, "api_key": view})

    def _put_secret(self, user: str, body: Any, params: Any, path: str) -> ApiReply:
        self.secrets[path] = body["data"]
        return ApiReply(200, {"path": path, "version": 1, "updated_at": NOW.isoformat()})

    def _rotate_secret(self, user: str, body: Any, params: Any, path: str) -> ApiReply:
        if path not in self.secrets:
            return envelope(404, "not_found", "No such secret.", "req-rot")
        self.secrets[path] = body["data"]
        return ApiReply(
            200,
            {"path": path, "version": 2, "previous_version": 1,
             "previous_readable_until": NOW.isoformat()},
        )  # fmt: skip

    def _list_secrets(self, *_: Any) -> ApiReply:
        return ApiReply(200, [{"path": p, "version": 1} for p in self.secrets])

    def _verify(self, *_: Any) -> ApiReply:
        return ApiReply(
            200, {"valid": True, "entries": 12, "first_bad_sequence": None, "reason": None}
        )

    def _audit_export(self, *_: Any) -> ApiReply:
        """The bundle as the HTTP adapter hands JSON Lines on: text."""
        return ApiReply(200, BUNDLE, {"content-type": "application/x-ndjson"})


@dataclass
class InMemoryConfigStore(ConfigStore):
    """Contexts and sessions in memory."""

    config: CliConfig = field(default_factory=CliConfig)
    sessions: dict[str, StoredSession] = field(default_factory=dict)
    locks: int = 0

    def load_config(self) -> CliConfig:
        return self.config

    def save_config(self, config: CliConfig) -> None:
        self.config = config

    def load_session(self, context: str) -> StoredSession | None:
        return self.sessions.get(context)

    def save_session(self, context: str, session: StoredSession) -> None:
        self.sessions[context] = session

    def delete_session(self, context: str) -> None:
        self.sessions.pop(context, None)

    @contextlib.contextmanager
    def session_lock(self, context: str) -> Iterator[None]:
        self.locks += 1
        yield


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def wiring(
    api: InMemoryPlatformApi,
    store: InMemoryConfigStore,
    *,
    environ: dict[str, str] | None = None,
    clock: Clock | None = None,
    targets: list[Target] | None = None,
) -> Wiring:
    """Wiring whose API is ``api`` (recording each target it is built for in ``targets``)."""

    def factory(target: Target, options: GlobalOptions) -> PlatformApi:
        if targets is not None:
            targets.append(target)
        return api

    return Wiring(
        environ=environ or {},
        store=lambda: store,
        api=factory,
        clock=clock or Clock(),
    )
