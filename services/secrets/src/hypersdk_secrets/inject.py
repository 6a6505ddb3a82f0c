"""Composition root of the secrets service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.events import SecretsRequestRejected
from hypersdk_kit.bus import EventPublisher, RabbitEventPublisher, build_broker
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.runtime import Component, Periodic
from hypersdk_kit.transit import TrustKeys
from hypersdk_kit.trust import AssertionVerifier, load_public_key
from hypersdk_secrets.adapters.inbound.rpc import register_rpc
from hypersdk_secrets.adapters.outbound.vault import UNAVAILABLE_MESSAGE, VaultSecretManager
from hypersdk_secrets.config import SecretsSettings
from hypersdk_secrets.core.service import SecretsService
from hypersdk_secrets.ports.outbound import SecretManager

SERVICE = "secrets"
logger = logging.getLogger(__name__)


def grace_sweeper(secrets: SecretsService, *, interval_seconds: float) -> Periodic:
    """Destroys rotated-from versions whose grace ended, every ``interval_seconds``.

    Every replica runs one; overlaps are harmless (a destroyed version stays destroyed).
    """

    async def sweep() -> None:
        for path, version in await secrets.sweep():
            logger.info("rotated-from version destroyed", extra={"path": path, "version": version})

    return Periodic("sweeping rotation graces", sweep, interval_seconds=interval_seconds)


def vault_secret_manager(settings: SecretsSettings) -> VaultSecretManager:
    """A KV v2 SecretManager logged in with its AppRole, or with the token in its file."""
    return VaultSecretManager(
        settings.vault_session(unavailable=UNAVAILABLE_MESSAGE),
        mount=settings.vault_kv_mount,
        prefix=settings.vault_path_prefix,
    )


@asynccontextmanager
async def prepare_secrets(
    settings: SecretsSettings,
    *,
    manager: SecretManager | None = None,
    events: EventPublisher | None = None,
) -> AsyncIterator[tuple[SecretsService, RabbitBroker, list[Component]]]:
    """The secrets use cases wired to Vault and the bus (broker not started yet)."""
    broker = build_broker(
        settings.amqp_url.get_secret_value(), service=SERVICE, tls=settings.amqp_tls
    )
    publisher = events or RabbitEventPublisher(
        broker, service=SERVICE, declare_topology=settings.declare_topology
    )
    secrets = SecretsService(
        manager=manager or vault_secret_manager(settings),
        events=publisher,
        rotation_grace=timedelta(seconds=settings.rotation_grace_seconds),
    )
    keys = TrustKeys(settings)
    policy_keys = await keys.public(
        "policy", file=settings.policy_public_key_file, transit_key=settings.policy_transit_key
    )
    guard = RequestGuard(
        events=publisher,
        rejected=SecretsRequestRejected,
        grants=AssertionVerifier(policy_keys, issuer="policy"),
        seals=AssertionVerifier(
            load_public_key(settings.gateway_public_key_file), issuer="gateway"
        ),
    )
    register_rpc(
        broker,
        secrets,
        guard=guard,
        credential_readers=frozenset(settings.credential_readers),
        queued_export_grace_seconds=settings.queued_export_grace_seconds,
    )
    yield secrets, broker, keys.components
