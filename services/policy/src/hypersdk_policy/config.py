"""Policy settings, from ``HYPERSDK_POLICY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import DatabaseSettings
from hypersdk_kit.vault import VaultClientSettings


class PolicySettings(DatabaseSettings, VaultClientSettings):
    """Settings of the policy service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_POLICY_", extra="ignore")

    bootstrap_admin: str = Field(
        default="admin", description="User given the admin role when nobody holds it."
    )
    signing_key_file: Path | None = Field(
        default=None, description="Ed25519 private key (PEM, 0600) for grants; or transit_key."
    )
    transit_key: str | None = Field(
        default=None,
        description="Or the Vault transit key that signs grants (decision 0046).",
    )
    identity_public_key_file: Path | None = Field(
        default=None,
        description="Identity's Ed25519 public key (PEM), to check principal assertions.",
    )
    identity_transit_key: str | None = Field(
        default=None,
        description="Or the Vault transit key whose public keys check principal assertions.",
    )
    gateway_public_key_file: Path = Field(
        description="The gateway's Ed25519 public key (PEM), to check request seals."
    )
    grant_ttl_seconds: int = Field(default=60, ge=5, le=600, description="Lifetime of a grant.")
