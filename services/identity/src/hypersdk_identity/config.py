"""Identity settings, from ``HYPERSDK_IDENTITY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from hypersdk_contracts.permissions import Role
from hypersdk_kit.settings import DatabaseSettings
from hypersdk_kit.transit import PolicyKeySettings
from hypersdk_kit.vault import VaultClientSettings


class IdentitySettings(DatabaseSettings, VaultClientSettings, PolicyKeySettings):
    """Settings of the identity service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_IDENTITY_", extra="ignore")

    signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM, 0600) for principal assertions; or transit_key.",
    )
    transit_key: str | None = Field(
        default=None,
        description="Or the Vault transit key that signs principal assertions (decision 0046).",
    )
    gateway_public_key_file: Path = Field(
        description="The gateway's Ed25519 public key (PEM), to check request seals."
    )
    assertion_ttl_seconds: int = Field(
        default=60, ge=5, le=600, description="Lifetime of a principal assertion."
    )
    rpc_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of questions to policy (issuing API keys)."
    )

    bcrypt_cost: int = Field(default=12, ge=12, le=16, description="bcrypt work factor.")
    bcrypt_workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="bcrypt threads; default one per usable core (CPU affinity) but one.",
    )
    bcrypt_queue: int | None = Field(
        default=None,
        ge=0,
        le=1024,
        description="Checks that may wait for a bcrypt thread; beyond, 503 service_busy at "
        "once. Default 4 per thread.",
    )
    session_idle_seconds: int = Field(default=1800, ge=60, description="Inactivity timeout.")
    session_lifetime_seconds: int = Field(default=43200, ge=300, description="Absolute lifetime.")
    sweep_interval_seconds: float = Field(
        default=60, gt=0, description="How often expired sessions and lockouts are swept."
    )

    # Linux PAM users.
    pam_service: str = Field(
        default="hypersdk",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="PAM service name: the stack in /etc/pam.d/<name>.",
    )
    pam_group_roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Linux group -> role(s), JSON, e.g. {"hypersdk-ops": "operator"}.',
    )
    pam_auto_provision: bool = Field(
        default=True,
        description="Create a PAM user on their first good login if a mapped group holds them.",
    )
    pam_min_uid: int = Field(
        default=1000, ge=0, description="Linux accounts below this uid never log in here."
    )

    # Brute-force protection (in the spirit of Authelia's regulation).
    lockout_max_failures: int = Field(
        default=5, ge=1, description="Failures of one user name within the window that lock it."
    )
    lockout_window_seconds: int = Field(
        default=120, ge=1, description="Window in which failures are counted."
    )
    lockout_seconds: int = Field(default=300, ge=1, description="How long a lockout lasts.")
    login_free_failures: int = Field(
        default=2, ge=0, description="Failures of a user name before delays begin."
    )
    login_delay_base_seconds: int = Field(
        default=1, ge=0, description="First delay; doubles with each further failure (0: none)."
    )
    login_delay_max_seconds: int = Field(default=30, ge=0, description="Longest delay.")
    address_lockout_max_failures: int = Field(
        default=20,
        ge=0,
        description="Failures from one client address within the window that lock it (0: off).",
    )
    login_trust_seconds: int = Field(
        default=604800,
        ge=0,
        le=7776000,
        description="How long a good login puts its user name and address first in line (0: off).",
    )
    login_trust_addresses: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Addresses trusted per user name at most; the longest-trusted are dropped.",
    )

    @field_validator("pam_group_roles", mode="before")
    @classmethod
    def _roles_as_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                group: [roles] if isinstance(roles, str) else roles
                for group, roles in value.items()
            }
        return value

    @field_validator("pam_group_roles")
    @classmethod
    def _known_roles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        known = {role.value for role in Role}
        unknown = sorted({role for roles in value.values() for role in roles} - known)
        if unknown:
            raise ValueError(f"unknown roles in pam_group_roles: {', '.join(unknown)}")
        return value
