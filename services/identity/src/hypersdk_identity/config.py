"""Identity settings, from ``HYPERSDK_IDENTITY_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import DatabaseSettings


class IdentitySettings(DatabaseSettings):
    """Settings of the identity service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_IDENTITY_", extra="ignore")

    bcrypt_cost: int = Field(default=12, ge=12, le=16, description="bcrypt work factor.")
    session_idle_seconds: int = Field(default=1800, ge=60, description="Inactivity timeout.")
    session_lifetime_seconds: int = Field(default=43200, ge=300, description="Absolute lifetime.")
