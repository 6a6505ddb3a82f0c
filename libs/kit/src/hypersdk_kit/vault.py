"""A service's own Vault/OpenBao login through hvac (blocking calls: run them in threads).

Each service that needs Vault logs in with its own AppRole (decisions 0045, 0046): the
secrets service to its folder of the KV engine, identity and policy to sign with their
transit keys, and the services that check grants or principals to read those keys' public
halves. A static token file stays possible (a Vault Agent sidecar).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
from hvac.exceptions import (
    BadGateway,
    Forbidden,
    InternalServerError,
    Unauthorized,
    VaultDown,
    VaultError,
)
from pydantic import BaseModel, Field, model_validator
from requests.exceptions import RequestException

from hypersdk_contracts.errors import ErrorCode, ServiceError

_T = TypeVar("_T")
UNAVAILABLE = (RequestException, VaultDown, InternalServerError, BadGateway)
"""What says Vault cannot answer now: unreachable, timed out, sealed, or failing."""
RENEW_AT = 2 / 3
"""A token is renewed once this share of its lease has passed."""


@dataclass(frozen=True)
class AppRoleLogin:
    """Where the service's AppRole credentials are (0600 files, or a mounted Secret)."""

    role_id_file: Path
    secret_id_file: Path


class VaultClientSettings(BaseModel):
    """How a service reaches Vault and logs in: a mixin of its settings."""

    vault_addr: str = Field(default="http://127.0.0.1:8200", description="Vault/OpenBao URL.")
    vault_token_file: Path | None = Field(
        default=None, description="File (0600) holding a Vault token (or use an AppRole)."
    )
    vault_role_id_file: Path | None = Field(
        default=None, description="File holding the service's AppRole role ID."
    )
    vault_secret_id_file: Path | None = Field(
        default=None, description="File (0600) holding the service's AppRole secret ID."
    )
    vault_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of the CAs Vault's certificate is checked against (default: "
        "the system CAs).",
    )

    @model_validator(mode="after")
    def _one_way_into_vault(self) -> VaultClientSettings:
        approle = (self.vault_role_id_file, self.vault_secret_id_file)
        if any(approle) and not all(approle):
            raise ValueError("an AppRole needs both VAULT_ROLE_ID_FILE and VAULT_SECRET_ID_FILE")
        if all(approle) and self.vault_token_file is not None:
            raise ValueError("set either VAULT_TOKEN_FILE or the AppRole files, not both")
        return self

    @property
    def vault_login_configured(self) -> bool:
        """Whether a token file or an AppRole is given."""
        return self.vault_token_file is not None or self.vault_role_id_file is not None

    def vault_session(self, *, unavailable: str) -> VaultSession:
        """A session logged in as configured; ``unavailable`` is the 503's message."""
        if not self.vault_login_configured:
            raise ValueError("Vault is needed: set VAULT_TOKEN_FILE or the AppRole files")
        approle = None
        token = None
        if self.vault_role_id_file is not None and self.vault_secret_id_file is not None:
            approle = AppRoleLogin(self.vault_role_id_file, self.vault_secret_id_file)
        elif self.vault_token_file is not None:
            token = self.vault_token_file.read_text().strip()
        verify: str | bool = str(self.vault_ca_file) if self.vault_ca_file else True
        client = hvac.Client(url=self.vault_addr, token=token, timeout=10, verify=verify)
        return VaultSession(client, approle=approle, unavailable=unavailable)


class VaultSession:
    """An hvac client whose token stays valid.

    With a static token, nothing is done. With an AppRole, the service logs in when it first
    needs Vault, renews its token once two thirds of the lease have passed, logs in again when
    a renewal is refused or would leave less than a third of the first lease (the token's
    maximum TTL nears), and once more when a call is refused as unauthenticated (the token
    was revoked). The secret ID is read from its file at each login and never kept or logged.
    """

    def __init__(
        self,
        client: hvac.Client,
        *,
        approle: AppRoleLogin | None = None,
        unavailable: str = "Vault is unavailable; try again shortly.",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._unavailable = unavailable
        self._approle = approle
        self._clock = clock
        self._lock = threading.Lock()
        self._renew_at = 0.0 if approle is not None else math.inf
        self._lease = 0

    def _login(self) -> None:
        assert self._approle is not None
        role_id = self._approle.role_id_file.read_text().strip()
        secret_id = self._approle.secret_id_file.read_text().strip()
        auth = self.client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
        self._lease = int(auth.get("lease_duration") or 0)
        self._schedule(self._lease)

    def _schedule(self, lease: int) -> None:
        self._renew_at = self._clock() + lease * RENEW_AT if lease > 0 else math.inf

    def fresh(self) -> None:
        """Make sure the token is valid for a while (blocking: call it in a thread)."""
        if self._approle is None or self._clock() < self._renew_at:
            return
        with self._lock:
            if self._clock() < self._renew_at:
                return
            if self._lease > 0:
                try:
                    auth = self.client.auth.token.renew_self()["auth"]
                except VaultError:  # refused, or past its maximum TTL: log in again
                    auth = None
                lease = int(auth.get("lease_duration") or 0) if auth else 0
                if lease * 3 >= self._lease:
                    self._schedule(lease)
                    return
            self._login()

    def call(self, operation: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``operation`` with a fresh token; once more after a login if it was refused.

        Vault unreachable, sealed, or failing (5xx) is ``upstream_unavailable`` (a 503 with
        ``Retry-After`` at the gateway); the next call tries again, so service resumes by
        itself when Vault is back. Nothing is cached meanwhile.
        """
        try:
            self.fresh()
            try:
                return operation(*args, **kwargs)
            except (Forbidden, Unauthorized):
                if self._approle is None:
                    raise
                with self._lock:
                    self._login()
                return operation(*args, **kwargs)
        except UNAVAILABLE as exc:
            raise ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, self._unavailable) from exc
