"""Exporter settings, from ``HYPERSDK_EXPORTER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import DatabaseSettings


class ExporterSettings(DatabaseSettings):
    """Settings of the exporter service."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_EXPORTER_", extra="ignore")

    export_dir: Path = Field(description="Where artifacts are written (created 0700).")
    lab_root: Path = Field(description="Directory under which 'local' providers may live.")
    qemu_img: str = Field(default="qemu-img", description="qemu-img executable.")
    conversion_user: str = Field(
        default="hypersdk-convert",
        description="Unprivileged user qemu-img runs as when the exporter runs as root.",
    )
    libvirt_disk_roots: list[Path] = Field(
        default_factory=lambda: [Path("/var/lib/libvirt/images")],
        description="Directories a local libvirt provider's disks may be read from.",
    )
    job_concurrency: int = Field(default=1, ge=1, le=16, description="Exports run at once.")
    rpc_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of questions.")
    policy_public_key_file: Path = Field(
        description="Policy's Ed25519 public key (PEM), to check grants of requests and commands."
    )
    gateway_public_key_file: Path = Field(
        description="The gateway's Ed25519 public key (PEM), to check request seals."
    )
    max_command_age_seconds: int = Field(
        default=86400, ge=60, description="Export commands whose grant is older are refused."
    )
