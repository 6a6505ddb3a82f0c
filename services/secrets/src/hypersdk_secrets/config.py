"""Secrets settings, from ``HYPERSDK_SECRETS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import ServiceSettings
from hypersdk_kit.transit import PolicyKeySettings
from hypersdk_kit.vault import VaultClientSettings


class SecretsSettings(ServiceSettings, VaultClientSettings, PolicyKeySettings):
    """Settings of the secrets service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_SECRETS_", extra="ignore")

    vault_kv_mount: str = Field(default="secret", description="KV v2 mount point.")
    vault_path_prefix: str = Field(default="hypersdk", description="Folder of our secrets.")
    gateway_public_key_file: Path = Field(
        description="The gateway's Ed25519 public key (PEM), to check request seals."
    )
    credential_readers: list[str] = Field(
        default_factory=lambda: ["hypersdk-exporter"],
        description="Broker logins that may read provider credentials (JSON list): the "
        "exporter's. Every other caller is refused (decision 0033).",
    )
    rotation_grace_seconds: int = Field(
        default=86400,
        ge=0,
        description="How long a rotated-from version stays readable before it is destroyed.",
    )
    grace_sweep_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often ended graces are looked for."
    )
    queued_export_grace_seconds: int = Field(
        default=86400,
        ge=0,
        description="How long after they expired an export command's seal and grant still back "
        "its worker's credential read (the job waited in the queue); the exporter's "
        "MAX_COMMAND_AGE_SECONDS bounds the command itself the same way.",
    )

    @model_validator(mode="after")
    def _vault_login_given(self) -> SecretsSettings:
        if not self.vault_login_configured:
            raise ValueError("set either VAULT_TOKEN_FILE or the AppRole files")
        return self
