"""The gateway's RabbitMQ permissions from deploy/rabbitmq/definitions.json, on the real broker.

The stack's gateway user has exactly the gateway's permissions and topic permissions of the
definitions file (tools/devstack.py provisions every stack from it); the revocation feed must
start with them (declare, bind, consume, without declaring the exchange), and a bind to any
other routing key must be refused. The identity user publishes the revocations.
"""

from __future__ import annotations

import asyncio
import secrets

import aiormq
import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.events import ApiKeyRevoked
from hypersdk_contracts.names import EVENTS_EXCHANGE
from hypersdk_contracts.rpc import Principal
from hypersdk_gateway.adapters.inbound.revocations import RevocationFeed
from hypersdk_gateway.core.credentials import CredentialCache, credential_key
from hypersdk_kit.bus import RabbitEventPublisher, broker_connection, build_broker

from .conftest import Stack

KEY = credential_key("apikey:hsdk_k_permissions")


async def test_the_feed_runs_with_exactly_the_gateways_permissions(stack: Stack) -> None:
    identity = build_broker(stack.config.amqp_url("identity"), service="identity")
    gateway = build_broker(stack.config.amqp_url("gateway"), service="gateway")
    await identity.start()
    await gateway.start()
    try:
        events = RabbitEventPublisher(identity, service="identity", declare_topology=False)
        cache = CredentialCache(ttl_seconds=10)
        feed = RevocationFeed(gateway, cache)
        await feed.start(declare_topology=False)
        assert cache.live

        cache.remember_principal(KEY, Principal(username="alice"), generation=cache.generation)
        await events.publish(
            ApiKeyRevoked(key_id="k-1", owner="alice", reason="revoked"),
            subject="apikey/k-1",
            context=RequestContext(actor="root"),
        )
        for _ in range(500):
            if cache.principal(KEY) is None:
                break
            await asyncio.sleep(0.01)
        assert cache.principal(KEY) is None

        # Anything else on the event stream is not the gateway's to read.
        channel = await broker_connection(gateway).channel()
        queue = await channel.declare_queue(
            f"{feed.queue_name[:-32]}{secrets.token_hex(16)}",
            exclusive=True,
            auto_delete=True,
            arguments={"x-queue-type": "classic"},
        )
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.bind(EVENTS_EXCHANGE, routing_key="identity.login.failed")
        await feed.stop()
    finally:
        await gateway.stop()
        await identity.stop()
