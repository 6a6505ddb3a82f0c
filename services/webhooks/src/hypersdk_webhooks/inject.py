"""Composition root of the webhooks service."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.events import WebhooksRequestRejected
from hypersdk_kit.bus import RabbitEventPublisher, build_broker
from hypersdk_kit.database import create_pool
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.outbox import build_outbox
from hypersdk_kit.runtime import Component, Periodic
from hypersdk_kit.transit import TrustKeys
from hypersdk_kit.trust import AssertionVerifier, load_public_key, require_private_file
from hypersdk_webhooks.adapters.inbound.broker_auth import BrokerAuthServer
from hypersdk_webhooks.adapters.inbound.bus import register_consumers
from hypersdk_webhooks.adapters.inbound.delivery_loop import DeliveryLoop
from hypersdk_webhooks.adapters.outbound.broker import RabbitPublicFeed, RabbitTaps
from hypersdk_webhooks.adapters.outbound.http_delivery import HttpDelivery
from hypersdk_webhooks.adapters.outbound.postgres import (
    SCHEMA,
    FernetSealer,
    PostgresEndpointStore,
    PostgresMessageStore,
    PostgresSubscriptionStore,
)
from hypersdk_webhooks.adapters.outbound.resolvers import DnsResolver, SystemResolver
from hypersdk_webhooks.config import WebhooksSettings, nameserver
from hypersdk_webhooks.core.service import SERVICE, WebhookService
from hypersdk_webhooks.core.ssrf import AddressPolicy
from hypersdk_webhooks.core.subscriptions import SubscriptionService
from hypersdk_webhooks.ports.outbound import Resolver

MAX_KEY_FILE_BYTES = 4096


def read_key_file(path: Path) -> str:
    """A sealing key from its private file (one that is not, or missing, stops the start)."""
    try:
        require_private_file(path)
        with path.open("rb") as stream:
            text = stream.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise SystemExit(f"cannot use the sealing key file {path}: {exc}") from None
    if len(text) > MAX_KEY_FILE_BYTES:
        raise SystemExit(f"{path} is too large to be a sealing key")
    return text.decode("ascii", errors="replace").strip()


def sealer_of(settings: WebhooksSettings) -> FernetSealer:
    """The sealer of signing secrets at rest, from the configured key files."""
    try:
        return FernetSealer(
            read_key_file(settings.sealing_key_file),
            retired=[read_key_file(path) for path in settings.retired_sealing_key_files],
        )
    except ValueError as exc:  # the message never holds the key
        raise SystemExit(f"bad sealing key: {exc}") from None


def resolver_of(settings: WebhooksSettings) -> Resolver:
    """The configured name servers, else the system's resolver."""
    if settings.nameservers:
        return DnsResolver([nameserver(text) for text in settings.nameservers])
    return SystemResolver()


def address_policy(settings: WebhooksSettings) -> AddressPolicy:
    """What deliveries may reach beyond the public internet (the allow-list)."""
    return AddressPolicy.from_strings(
        networks=settings.allowed_networks, hosts=settings.allowed_hosts
    )


def subscriber_vhost(settings: WebhooksSettings) -> str:
    """The configured one, else the virtual host of the service's own AMQP URL."""
    if settings.subscriber_vhost:
        return settings.subscriber_vhost
    path = urlsplit(settings.amqp_url.get_secret_value()).path
    return unquote(path[1:]) if len(path) > 1 else "/"


@asynccontextmanager
async def prepare_webhooks(
    settings: WebhooksSettings,
) -> AsyncIterator[tuple[WebhookService, RabbitBroker, list[Component]]]:
    """The webhook use cases wired to PostgreSQL, the bus and the network (nothing started)."""
    amqp_url = settings.amqp_url.get_secret_value()
    broker = build_broker(amqp_url, service=SERVICE, tls=settings.amqp_tls)
    sealer = sealer_of(settings)
    pool = await create_pool(
        settings.database_url.get_secret_value(), size=settings.database_pool_size
    )
    try:
        publisher = RabbitEventPublisher(
            broker, service=SERVICE, declare_topology=settings.declare_topology
        )
        outbox = build_outbox(
            pool, settings=settings, schema=SCHEMA, service=SERVICE, publisher=publisher
        )
        policy = address_policy(settings)
        seals = AssertionVerifier(
            load_public_key(settings.gateway_public_key_file), issuer="gateway"
        )
        service = WebhookService(
            endpoints=PostgresEndpointStore(outbox.database, sealer=sealer),
            messages=PostgresMessageStore(outbox.database),
            delivery=HttpDelivery(resolver=resolver_of(settings), policy=policy),
            uow=outbox.unit_of_work,
            # its own events come back on its queue too (and are never delivered)
            attribution=settings.attribution(service=SERVICE, amqp_url=amqp_url, seals=seals),
            policy=policy,
            retry=settings.retry_policy,
            disable=settings.disable_policy,
            rotation_overlap=timedelta(seconds=settings.rotation_overlap_seconds),
            lease=timedelta(seconds=settings.lease_seconds),
            public=RabbitPublicFeed(broker, declare_topology=settings.declare_topology),
        )
        subscriptions = SubscriptionService(
            store=PostgresSubscriptionStore(outbox.database),
            taps=RabbitTaps(broker, declare_topology=settings.declare_topology),
            uow=outbox.unit_of_work,
            vhost=subscriber_vhost(settings),
            enabled=settings.broker_auth_port != 0,
            max_subscriptions=settings.max_subscriptions,
        )
        keys = TrustKeys(settings)
        policy_keys = await keys.public(
            "policy",
            file=settings.policy_public_key_file,
            transit_key=settings.policy_transit_key,
        )
        guard = RequestGuard(
            events=outbox.unit_of_work,
            rejected=WebhooksRequestRejected,
            grants=AssertionVerifier(policy_keys, issuer="policy"),
            seals=seals,
        )
        events = register_consumers(
            broker,
            service,
            prefetch=settings.prefetch,
            batch_size=settings.batch_size,
            batch_wait_seconds=settings.batch_wait_seconds,
            guard=guard,
            subscriptions=subscriptions,
            declare_topology=settings.declare_topology,
        )
        loop = DeliveryLoop(
            service, poll_seconds=settings.poll_seconds, claim_limit=settings.claim_limit
        )
        purge = Periodic(
            "purging old webhook messages",
            functools.partial(
                service.purge,
                delivered_after=timedelta(seconds=settings.delivered_retention_seconds),
                dead_after=timedelta(seconds=settings.dead_retention_seconds),
            ),
            interval_seconds=settings.purge_interval_seconds,
        )
        tear_down = Periodic(
            "removing deleted subscriptions' broker objects",
            subscriptions.tear_down,
            interval_seconds=settings.poll_seconds * 10,
        )
        components: list[Component] = [outbox.relay, *keys.components, events, loop, purge]
        components.append(tear_down)
        if settings.broker_auth_port:
            components.append(
                BrokerAuthServer(
                    subscriptions, host=settings.broker_auth_host, port=settings.broker_auth_port
                )
            )
        yield service, broker, components
    finally:
        await pool.close()
