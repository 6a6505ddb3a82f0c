"""Settings shared by every service; each service adds its own and sets its env prefix."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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


class DatabaseSettings(ServiceSettings):
    """A service that owns tables in PostgreSQL."""

    database_url: SecretStr = Field(description="PostgreSQL DSN of this service's database.")
    database_pool_size: int = Field(default=5, ge=1, le=100, description="Connections kept.")
