"""Audit settings, from ``HYPERSDK_AUDIT_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import DatabaseSettings


class AuditSettings(DatabaseSettings):
    """Settings of the audit service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_AUDIT_", extra="ignore")

    prefetch: int = Field(default=50, ge=1, le=1000, description="Events in flight per consumer.")
    policy_public_key_file: Path = Field(
        description="Policy's Ed25519 public key (PEM), to check the grant of every request."
    )
