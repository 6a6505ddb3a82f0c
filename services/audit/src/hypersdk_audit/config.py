"""Audit settings, from ``HYPERSDK_AUDIT_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.attribution import PublisherSettings
from hypersdk_kit.settings import DatabaseSettings
from hypersdk_kit.transit import PolicyKeySettings
from hypersdk_kit.vault import VaultClientSettings


class AuditSettings(DatabaseSettings, VaultClientSettings, PolicyKeySettings, PublisherSettings):
    """Settings of the audit service (events of a login ``publishers`` lacks are quarantined)."""

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
    gateway_public_key_file: Path = Field(
        description="The gateway's Ed25519 public key (PEM), to check the request seal of events."
    )

    checkpoint_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM, 0600) that signs checkpoints, for deployments "
        "without Vault (decision 0047).",
    )
    checkpoint_transit_key: str | None = Field(
        default=None, description="Or the Vault transit key that signs checkpoints."
    )
    checkpoint_interval_seconds: float = Field(
        default=60.0,
        ge=1,
        le=86400,
        description="Sign a checkpoint this often when the log has grown since the last one.",
    )
    origin: str = Field(
        default="hypersdk",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
        description="Name of this log in its checkpoints (one per deployment).",
    )

    retention_database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN of the retention job's own role, the only one that may "
        "cut entries (decision 0048). `migrate` provisions that role from it; `retain` "
        "connects with it. The service itself never uses it.",
    )
    retention_max_age_days: float | None = Field(
        default=None, gt=0, description="Cut entries audit received longer ago than this."
    )
    retention_max_entries: int | None = Field(
        default=None, ge=1, description="Keep at most this many newest entries."
    )

    @model_validator(mode="after")
    def _one_checkpoint_key(self) -> AuditSettings:
        if (self.checkpoint_key_file is None) == (self.checkpoint_transit_key is None):
            raise ValueError("set either checkpoint_key_file or checkpoint_transit_key")
        return self
