"""Webhooks settings, from ``HYPERSDK_WEBHOOKS_*`` environment variables."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.attribution import PublisherSettings
from hypersdk_kit.settings import DatabaseSettings
from hypersdk_kit.transit import PolicyKeySettings
from hypersdk_kit.vault import VaultClientSettings
from hypersdk_webhooks.core.schedule import DEFAULT_DELAYS, DisablePolicy, RetryPolicy

MAX_PORT = 65535
_DEFAULT_SCHEDULE = [delay.total_seconds() for delay in DEFAULT_DELAYS]


class WebhooksSettings(DatabaseSettings, VaultClientSettings, PolicyKeySettings, PublisherSettings):
    """Settings of the webhooks service (only events ``publishers`` attributes go out)."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_WEBHOOKS_", extra="ignore")

    gateway_public_key_file: Path = Field(
        description="The gateway's Ed25519 public key (PEM), to check request seals: of "
        "requests, and of the events delivered (only genuine events go out)."
    )
    sealing_key_file: Path = Field(
        description="File (0600 or 0440) holding the Fernet key that seals signing secrets at rest."
    )
    retired_sealing_key_files: list[Path] = Field(
        default_factory=list,
        description="Files of earlier sealing keys (JSON list): they still open, never seal.",
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs deliveries may reach although blocked by default (JSON list), "
        "e.g. an internal receiver's subnet.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names that may reach any address, blocked ones too (JSON list).",
    )
    nameservers: list[str] = Field(
        default_factory=list,
        description="Resolve targets with these DNS servers only, `address` or `address:port` "
        "(JSON list); empty: the system's resolver.",
    )
    prefetch: int = Field(
        default=200, ge=1, le=5000, description="Events unacknowledged at once (bounds a batch)."
    )
    batch_size: int = Field(default=100, ge=1, description="Store a batch at this many events.")
    batch_wait_seconds: float = Field(
        default=0.02, gt=0, le=5, description="...or this long after its first event."
    )
    poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the delivery loop looks for due messages when nothing woke it.",
    )
    claim_limit: int = Field(
        default=100, ge=1, le=1000, description="Messages claimed for delivery at once."
    )
    lease_seconds: float = Field(
        default=120,
        ge=5,
        le=3600,
        description="A claimed message comes due again after this long if its worker died. "
        "Keep it above the longest endpoint timeout (30 s at most): an attempt that outlives "
        "its lease may be made twice (its late result is dropped, never written over).",
    )
    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: list(_DEFAULT_SCHEDULE),
        min_length=1,
        max_length=50,
        description="The wait before each attempt, seconds (JSON list): the first, then each "
        "retry; after the last, a dead letter.",
    )
    retry_jitter_ratio: float = Field(
        default=0.2, ge=0, lt=1, description="Each wait is scaled by 1 ± up to this ratio."
    )
    disable_after_seconds: float = Field(
        default=5 * 86400, ge=0, description="Disable an endpoint failing this long..."
    )
    disable_after_failures: int = Field(
        default=10, ge=1, description="...and at least this many attempts in a row."
    )
    delivered_retention_seconds: float = Field(
        default=7 * 86400,
        ge=60,
        description="Delivered messages are forgotten this long after their event came.",
    )
    dead_retention_seconds: float = Field(
        default=30 * 86400,
        ge=60,
        description="Dead letters are forgotten this long after their event came.",
    )
    purge_interval_seconds: float = Field(
        default=300, ge=1, le=86400, description="How often old messages are purged."
    )
    broker_auth_host: str = Field(
        default="127.0.0.1",
        description="Address the broker authorizer listens on: RabbitMQ's HTTP auth backend "
        "asks it about subscription users (decision 0054). Only the broker may reach it.",
    )
    broker_auth_port: int = Field(
        default=0,
        ge=0,
        le=MAX_PORT,
        description="Its port; 0: not served, and AMQP subscriptions cannot be created.",
    )
    subscriber_vhost: str = Field(
        default="",
        max_length=255,
        description="The virtual host subscribers connect to; empty: the one of AMQP_URL.",
    )
    max_subscriptions: int = Field(
        default=100, ge=1, le=1000, description="AMQP subscriptions at most."
    )
    rotation_overlap_seconds: float = Field(
        default=86400,
        ge=0,
        le=30 * 86400,
        description="After a rotation, the old secret signs too for this long.",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ip_network(cidr, strict=True)  # ValueError names the bad one
        return value

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for server in value:
            nameserver(server)
        return value

    @model_validator(mode="after")
    def _policies_hold(self) -> WebhooksSettings:
        # ValueError at start-up: a schedule that decreases, say
        _ = self.retry_policy, self.disable_policy
        return self

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry schedule configured."""
        return RetryPolicy(
            delays=tuple(timedelta(seconds=s) for s in self.retry_schedule_seconds),
            jitter_ratio=self.retry_jitter_ratio,
        )

    @property
    def disable_policy(self) -> DisablePolicy:
        """When an endpoint is disabled."""
        return DisablePolicy(
            after=timedelta(seconds=self.disable_after_seconds),
            min_failures=self.disable_after_failures,
        )


def nameserver(text: str) -> tuple[str, int]:
    """``address`` or ``address:port`` (``[v6]:port``) as (address, port); ValueError if not."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = int(number)
    ip_network(host)  # an address, not a name: the resolver is asked before anything resolves
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"port out of range in nameserver {text!r}")
    return host, port
