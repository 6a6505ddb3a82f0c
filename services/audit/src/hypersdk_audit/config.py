"""Audit settings, from ``HYPERSDK_AUDIT_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import DatabaseSettings


class AuditSettings(DatabaseSettings):
    """Settings of the audit service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_AUDIT_", extra="ignore")

    prefetch: int = Field(
        default=500, ge=1, le=5000, description="Events unacknowledged at once (bounds a batch)."
    )
    batch_size: int = Field(
        default=200, ge=1, description="Record a batch once this many events are waiting."
    )
    batch_wait_seconds: float = Field(
        default=0.02, gt=0, le=5, description="...or this long after its first event."
    )
    policy_public_key_file: Path = Field(
        description="Policy's Ed25519 public key (PEM), to check the grant of every request."
    )
    gateway_public_key_file: Path = Field(
        description="The gateway's Ed25519 public key (PEM), to check request seals."
    )
