"""Exporter settings, from ``HYPERSDK_EXPORTER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import DatabaseSettings
from hypersdk_kit.transit import PolicyKeySettings
from hypersdk_kit.vault import VaultClientSettings


class ExporterSettings(DatabaseSettings, VaultClientSettings, PolicyKeySettings):
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
    gateway_public_key_file: Path = Field(
        description="The gateway's Ed25519 public key (PEM), to check request seals."
    )
    provider_concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Jobs of one provider running at once across all workers; more wait queued.",
    )
    max_job_attempts: int = Field(
        default=5,
        ge=1,
        le=9,
        description="A job started this often without finishing ends failed (below the work "
        "queue's delivery limit of 10, so the job ends before its command is dead-lettered).",
    )
    job_poll_seconds: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="How often a worker reads its running job's row (a cancel stops it within).",
    )
    job_heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="How often a worker marks its running job alive."
    )
    stale_job_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A running job with no heartbeat this long is ended by the sweeper.",
    )
    sweep_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often the stale-job sweeper looks."
    )
    progress_interval_seconds: float = Field(
        default=2.0, gt=0, description="Progress events at most this often (or every step)."
    )
    progress_step: int = Field(
        default=5, ge=1, le=100, description="Percent between progress events."
    )
    progress_min_interval_seconds: float = Field(
        default=1.0, ge=0, description="Progress events of a job never closer than this."
    )
    max_command_age_seconds: int = Field(
        default=86400, ge=60, description="Export commands whose grant is older are refused."
    )
