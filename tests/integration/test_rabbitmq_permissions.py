"""The gateway's RabbitMQ permissions from deploy/rabbitmq/definitions.json, on the real broker.

A throwaway vhost and user get exactly the gateway's permissions and topic permissions from the
definitions file; the revocation feed must start with them (declare, bind, consume, without
declaring the exchange), and a bind to any other routing key must be refused.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiormq
import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.events import ApiKeyRevoked
from hypersdk_contracts.names import EVENTS_EXCHANGE
from hypersdk_contracts.rpc import Principal
from hypersdk_gateway.adapters.inbound.revocations import RevocationFeed
from hypersdk_gateway.core.credentials import CredentialCache, credential_key
from hypersdk_kit.bus import RabbitEventPublisher, broker_connection, build_broker

DEFINITIONS = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "definitions.json"
KEY = credential_key("apikey:hsdk_k_permissions")


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def gateway_vhost() -> Iterator[tuple[str, str]]:
    """(gateway user's URL, guest's URL) of a fresh vhost set up from the definitions file."""
    definitions = json.loads(DEFINITIONS.read_text())
    (perms,) = [p for p in definitions["permissions"] if p["user"] == "hypersdk-gateway"]
    (topic,) = [p for p in definitions["topic_permissions"] if p["user"] == "hypersdk-gateway"]
    suffix = secrets.token_hex(4)
    vhost, user, password = f"hypersdk-perm-{suffix}", f"hypersdk-gateway-{suffix}", "pw-" + suffix
    _ctl("add_vhost", vhost)
    try:
        _ctl("add_user", user, password)
        _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        _ctl(
            "set_permissions", "-p", vhost, user, perms["configure"], perms["write"], perms["read"]
        )
        _ctl(
            "set_topic_permissions",
            "-p",
            vhost,
            user,
            topic["exchange"],
            topic["write"],
            topic["read"],
        )
        yield (
            f"amqp://{user}:{password}@127.0.0.1:5672/{quote(vhost, safe='')}",
            f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}",
        )
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], check=False, timeout=60)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, timeout=60)


async def test_the_feed_runs_with_exactly_the_gateways_permissions(
    gateway_vhost: tuple[str, str],
) -> None:
    gateway_url, guest_url = gateway_vhost
    guest = build_broker(guest_url, service="identity")
    gateway = build_broker(gateway_url, service="gateway")
    await guest.start()
    await gateway.start()
    try:
        # The exchange exists (in production, from the definitions file).
        events = RabbitEventPublisher(guest, service="identity", declare_topology=True)
        await events.publish(
            ApiKeyRevoked(key_id="k-0", owner="alice", reason="revoked"),
            subject="apikey/k-0",
            context=RequestContext(actor="root"),
        )
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
        await guest.stop()
