"""Identity settings, from ``HYPERSDK_IDENTITY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import DatabaseSettings


class IdentitySettings(DatabaseSettings):
    """Settings of the identity service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_IDENTITY_", extra="ignore")

    signing_key_file: Path = Field(
        description="Ed25519 private key (PEM, 0600) for principal assertions."
    )
    policy_public_key_file: Path = Field(
        description="Policy's Ed25519 public key (PEM), to check grants."
    )
    assertion_ttl_seconds: int = Field(
        default=60, ge=5, le=600, description="Lifetime of a principal assertion."
    )

    bcrypt_cost: int = Field(default=12, ge=12, le=16, description="bcrypt work factor.")
    session_idle_seconds: int = Field(default=1800, ge=60, description="Inactivity timeout.")
    session_lifetime_seconds: int = Field(default=43200, ge=300, description="Absolute lifetime.")
