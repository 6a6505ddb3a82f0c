"""Gateway settings, from ``HYPERSDK_GATEWAY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PositiveInt, model_validator
from pydantic_settings import SettingsConfigDict

from hypersdk_kit.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Settings of the gateway."""

    model_config = SettingsConfigDict(env_prefix="HYPERSDK_GATEWAY_", extra="ignore")

    signing_key_file: Path = Field(
        description="Ed25519 private key (PEM, 0600) that seals each request put on the bus."
    )
    seal_ttl_seconds: int = Field(
        default=30,
        ge=5,
        le=300,
        description="Lifetime of a request seal: longer than a request may wait in a queue "
        "(rpc_timeout_seconds); services remember each seal this long to refuse replays.",
    )
    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8080, ge=0, le=65535, description="Listen port.")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (enables TLS).")
    tls_key_file: Path | None = Field(default=None, description="PEM private key.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle: enables mutual TLS; client certificates are verified "
        "against it.",
    )
    tls_client_cert_required: bool = Field(
        default=True,
        description="With tls_client_ca_file: refuse clients without a certificate (false: "
        "a certificate is optional, but one that is sent must verify).",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Allowed browser origins.")
    cors_allow_credentials: bool = Field(default=False, description="Allow credentialed CORS.")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Peers whose X-Forwarded-For is believed."
    )
    rate_limit_per_minute: int = Field(default=600, ge=1, description="Calls per principal.")
    login_rate_limit_per_minute: int = Field(default=10, ge=1, description="Logins per address.")
    auth_failures_per_minute: int = Field(
        default=10,
        ge=1,
        description="Failed authentications allowed per client address and minute (a "
        "bucket of this size, refilled over a minute); beyond, calls get 429 before identity "
        "is asked, unless their credential is one the gateway verified a moment ago.",
    )
    refusal_summary_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Calls refused for too many failed authentications, and anonymous calls "
        "over their rate limit, are audited as one gateway.refusals.summarized event per "
        "client address and window of this length.",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1, description="Default body limit.")
    max_export_body_bytes: int = Field(default=10_000_000, ge=1, description="Export limit.")
    rate_limits: dict[str, PositiveInt] = Field(
        default_factory=dict,
        description="Calls per minute by path prefix (the longest prefix wins), per principal "
        "or client address; added to the defaults, and overriding them for the same prefix.",
    )
    body_limits: dict[str, PositiveInt] = Field(
        default_factory=dict,
        description="Body bytes by path prefix (the longest prefix wins); added to the "
        "defaults, and overriding them for the same prefix.",
    )
    rpc_timeout_seconds: float = Field(default=10.0, gt=0, description="Backend timeout.")
    credential_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        le=30,
        description="How long a verified credential and its grants are reused (0: never). "
        "Any revocation event empties the cache at once; the bound keeps identity's view of "
        "session activity fresh and stays under the 60 s life of assertions and grants.",
    )
    max_pending_events: int = Field(
        default=256,
        ge=1,
        description="Most API calls in progress whose gateway.request.completed event the "
        "broker has not confirmed yet; further calls wait for one to finish.",
    )
    pending_event_wait_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long a call waits for room among the pending events before it is "
        "refused with 503 (the audit trail is not keeping up).",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long a connection may take to send a request's headers (from its "
        "first byte, or from when the connection opened) before it is closed.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long a request may take to send its whole body before it gets 408 "
        "request_timeout and its connection is closed.",
    )
    max_connections_per_address: int = Field(
        default=64,
        ge=1,
        description="Most open connections from one client address (socket peer); further "
        "ones are closed at once. Trusted proxies are not capped.",
    )
    event_batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Most gateway.request.completed events published together in one message "
        "(CloudEvents JSON batch format, one confirm); 1 publishes each event alone.",
    )
    event_batch_wait_seconds: float = Field(
        default=0.005,
        ge=0,
        le=1,
        description="While a batch of events awaits its confirm, how long newer events are "
        "collected at most before they go out in a batch of their own.",
    )
    credential_cache_entries: int = Field(
        default=10_000, ge=1, description="Most credentials cached at once (oldest dropped)."
    )

    @model_validator(mode="after")
    def _cors_is_safe(self) -> GatewaySettings:
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError("CORS origin '*' cannot be combined with credentials")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        for prefix in [*self.rate_limits, *self.body_limits]:
            if not prefix.startswith("/") or prefix.endswith("/"):
                raise ValueError(f"limit prefix {prefix!r}: a path starting, not ending, with '/'")
        return self
