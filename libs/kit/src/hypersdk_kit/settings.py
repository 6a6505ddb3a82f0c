"""Settings shared by every service; each service adds its own and sets its env prefix."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hypersdk_kit.trust import require_private_file


@dataclass(frozen=True)
class AmqpTls:
    """Client TLS for an ``amqps://`` broker: whom to trust, and this service's certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2 or newer, the client chain loaded if given.

        The broker's certificate and host name are verified against ``ca_file`` (the system
        CAs without one). A key file that others may read or anyone but its owner may change
        is refused (group read is allowed: Kubernetes mounts Secrets 0440 for the fsGroup).
        """
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            if self.key_file is not None:
                require_private_file(self.key_file)
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class ServiceSettings(BaseSettings):
    """What every service needs: the bus, logging and a health port.

    Subclasses set ``model_config = SettingsConfigDict(env_prefix="HYPERSDK_<SERVICE>_")``.
    """

    model_config = SettingsConfigDict(extra="ignore")

    amqp_url: SecretStr = Field(description="AMQP URL with this service's own RabbitMQ user.")
    log_level: str = Field(default="INFO", description="Python log level name.")
    health_host: str = Field(default="127.0.0.1", description="Address of /healthz, /readyz.")
    health_port: int = Field(default=0, ge=0, le=65535, description="0 disables the endpoint.")
    declare_topology: bool = Field(
        default=True,
        description="Declare exchanges and shared queues at start; false where RabbitMQ is "
        "provisioned from deploy/rabbitmq/definitions.json and users may not configure them.",
    )
    amqp_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle that signs RabbitMQ's certificate (amqps://; without it the "
        "system CAs).",
    )
    amqp_cert_file: Path | None = Field(
        default=None, description="PEM client certificate (chain) presented to RabbitMQ."
    )
    amqp_key_file: Path | None = Field(
        default=None, description="PEM private key of amqp_cert_file (0600 or 0440)."
    )

    @model_validator(mode="after")
    def _amqp_tls_is_consistent(self) -> ServiceSettings:
        if (self.amqp_cert_file is None) != (self.amqp_key_file is None):
            raise ValueError("set both amqp_cert_file and amqp_key_file, or neither")
        if self.amqp_tls is not None:
            scheme = urlsplit(self.amqp_url.get_secret_value()).scheme
            if scheme != "amqps":
                raise ValueError("amqp_ca_file/amqp_cert_file need an amqps:// amqp_url")
        return self

    @property
    def amqp_tls(self) -> AmqpTls | None:
        """Client TLS for the broker connection; None when no TLS file is configured."""
        if self.amqp_ca_file is None and self.amqp_cert_file is None:
            return None
        return AmqpTls(
            ca_file=self.amqp_ca_file, cert_file=self.amqp_cert_file, key_file=self.amqp_key_file
        )


class DatabaseSettings(ServiceSettings):
    """A service that owns tables in PostgreSQL."""

    database_url: SecretStr = Field(description="PostgreSQL DSN of this service's database.")
    database_pool_size: int = Field(default=5, ge=1, le=100, description="Connections kept.")
    outbox_batch_size: int = Field(
        default=100, ge=1, le=10000, description="Outbox rows the relay publishes per batch."
    )
    outbox_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the outbox relay looks for rows when no NOTIFY woke it.",
    )
    outbox_max_backoff_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Longest wait between relay retries in an outage."
    )
    migration_database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN of an administrator, used by `migrate` only: it creates "
        "the role of database_url (its user and password) owning only this service's schema. "
        "Unset: migrate connects with database_url, whose role must already exist.",
    )
