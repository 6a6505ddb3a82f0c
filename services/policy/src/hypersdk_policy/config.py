"""Policy settings, from ``HYPERSDK_POLICY_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import DatabaseSettings


class PolicySettings(DatabaseSettings):
    """Settings of the policy service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_POLICY_", extra="ignore")

    bootstrap_admin: str = Field(
        default="admin", description="User given the admin role when nobody holds it."
    )
