"""Composition root of the identity service: builds real adapters, or takes overrides."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import bcrypt
from faststream.rabbit import RabbitBroker

from hypersdk_contracts.events import IdentityRequestRejected
from hypersdk_identity.adapters.inbound.rpc import register_rpc
from hypersdk_identity.adapters.outbound.bcrypt_hasher import BcryptPasswordHasher
from hypersdk_identity.adapters.outbound.bus import RpcPermissionDirectory
from hypersdk_identity.adapters.outbound.common_passwords import ZxcvbnPasswordBlocklist
from hypersdk_identity.adapters.outbound.linux import NssAccountDirectory, PythonPamAuthenticator
from hypersdk_identity.adapters.outbound.postgres import (
    SCHEMA,
    PostgresApiKeyStore,
    PostgresSessionStore,
    PostgresThrottleStore,
    PostgresTrustStore,
    PostgresUserStore,
)
from hypersdk_identity.config import IdentitySettings
from hypersdk_identity.core.apikeys import ApiKeyService
from hypersdk_identity.core.pam import PamSupport
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_identity.core.throttle import LoginThrottle, ThrottleRule, TrustRule
from hypersdk_identity.ports.outbound import ThrottleStore, TrustStore
from hypersdk_kit.bus import RabbitEventPublisher, RpcClient, build_broker
from hypersdk_kit.database import create_pool
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.outbox import build_outbox
from hypersdk_kit.ports import EnvelopePublisher, UnitOfWork
from hypersdk_kit.runtime import Component
from hypersdk_kit.transit import TrustKeys
from hypersdk_kit.trust import AssertionVerifier, load_public_key

SERVICE = "identity"


@asynccontextmanager
async def prepare_identity(
    settings: IdentitySettings, *, events: EnvelopePublisher | None = None
) -> AsyncIterator[tuple[IdentityService, RabbitBroker, Sequence[Component]]]:
    """The identity use cases wired to PostgreSQL and the bus (broker not started yet).

    Also the components to start with the broker: the outbox relay (publishing through
    ``events`` if given).
    """
    broker = build_broker(
        settings.amqp_url.get_secret_value(), service=SERVICE, tls=settings.amqp_tls
    )
    pool = await create_pool(
        settings.database_url.get_secret_value(), size=settings.database_pool_size
    )
    try:
        hasher = BcryptPasswordHasher(
            cost=settings.bcrypt_cost, workers=settings.bcrypt_workers, queue=settings.bcrypt_queue
        )
        publisher = events or RabbitEventPublisher(
            broker, service=SERVICE, declare_topology=settings.declare_topology
        )
        outbox = build_outbox(
            pool, settings=settings, schema=SCHEMA, service=SERVICE, publisher=publisher
        )
        uow, database = outbox.unit_of_work, outbox.database
        users = PostgresUserStore(database)
        api_key_store = PostgresApiKeyStore(database)
        pam = PamSupport(
            authenticator=PythonPamAuthenticator(service=settings.pam_service),
            directory=NssAccountDirectory(),
            group_roles=settings.pam_group_roles,
            auto_provision=settings.pam_auto_provision,
            min_uid=settings.pam_min_uid,
        )
        identity = IdentityService(
            users=users,
            sessions=PostgresSessionStore(database),
            hasher=hasher,
            uow=uow,
            throttle=build_throttle(
                settings,
                store=PostgresThrottleStore(database),
                trust=PostgresTrustStore(database),
                uow=uow,
            ),
            blocklist=ZxcvbnPasswordBlocklist(),
            pam=pam,
            api_keys=api_key_store,
            session_policy=SessionPolicy(
                idle_seconds=settings.session_idle_seconds,
                lifetime_seconds=settings.session_lifetime_seconds,
            ),
            dummy_hash=bcrypt.hashpw(
                b"dummy-password-for-timing", bcrypt.gensalt(settings.bcrypt_cost)
            ),
        )
        keys = TrustKeys(settings)
        signer, own_keys = await keys.signer(
            file=settings.signing_key_file,
            transit_key=settings.transit_key,
            issuer=SERVICE,
            ttl_seconds=settings.assertion_ttl_seconds,
        )
        policy_keys = await keys.public(
            "policy",
            file=settings.policy_public_key_file,
            transit_key=settings.policy_transit_key,
        )
        guard = RequestGuard(
            events=uow,
            rejected=IdentityRequestRejected,
            grants=AssertionVerifier(policy_keys, issuer="policy"),
            # Its own assertions: a caller may list and revoke only its own sessions, and a
            # key issuing a key is held to the scopes its assertion names.
            principals=AssertionVerifier(own_keys, issuer=SERVICE),
            seals=AssertionVerifier(
                load_public_key(settings.gateway_public_key_file), issuer="gateway"
            ),
        )
        api_keys = ApiKeyService(
            keys=api_key_store,
            users=users,
            uow=uow,
            # Scopes of a new key are checked against policy here (zero trust), not trusted.
            permissions=RpcPermissionDirectory(
                RpcClient(broker, timeout_seconds=settings.rpc_timeout_seconds)
            ),
            pam=pam,
        )
        register_rpc(broker, identity, signer=signer, guard=guard, api_keys=api_keys)
        yield identity, broker, [outbox.relay, *keys.components]
    finally:
        await pool.close()


def build_throttle(
    settings: IdentitySettings,
    *,
    store: ThrottleStore,
    uow: UnitOfWork,
    trust: TrustStore | None = None,
) -> LoginThrottle:
    """The login throttle the settings describe."""
    address_rule = None
    if settings.address_lockout_max_failures > 0:
        address_rule = ThrottleRule(
            max_failures=settings.address_lockout_max_failures,
            window_seconds=settings.lockout_window_seconds,
            lockout_seconds=settings.lockout_seconds,
        )
    return LoginThrottle(
        store=store,
        username_rule=ThrottleRule(
            max_failures=settings.lockout_max_failures,
            window_seconds=settings.lockout_window_seconds,
            lockout_seconds=settings.lockout_seconds,
            free_failures=settings.login_free_failures,
            delay_base_seconds=settings.login_delay_base_seconds,
            delay_max_seconds=settings.login_delay_max_seconds,
        ),
        address_rule=address_rule,
        uow=uow,
        clock=lambda: datetime.now(UTC),
        trust=trust,
        trust_rule=TrustRule(
            seconds=settings.login_trust_seconds,
            addresses_per_user=settings.login_trust_addresses,
        ),
    )
