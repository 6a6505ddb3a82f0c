"""The gateway's revocation feed against the real RabbitMQ.

Revocation events empty a replica's credential cache; other events do not. When the feed's
channel is closed under it, the cache stops serving at once (fail closed) and serves again
only once aio-pika has restored the queue, its bindings and the consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from faststream.rabbit import RabbitBroker

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.events import ApiKeyRevoked, JobProgressed, RoleRemoved, SessionRevoked
from hypersdk_contracts.rpc import Principal
from hypersdk_gateway.adapters.inbound.revocations import RevocationFeed
from hypersdk_gateway.core.credentials import CredentialCache, credential_key
from hypersdk_kit.bus import RabbitEventPublisher

from .conftest import close_under, until

KEY = credential_key("session:hsdk_s_feed")
ALICE = Principal(username="alice", session_id="s-1")
CONTEXT = RequestContext(actor="root", request_id="feed-test-0001")


class RecordingCache(CredentialCache):
    """The real cache, noting when the feed suspends and resumes it."""

    def __init__(self) -> None:
        super().__init__(ttl_seconds=10)
        self.transitions: list[str] = []

    def suspend(self) -> None:
        self.transitions.append("suspend")
        super().suspend()

    def resume(self) -> None:
        self.transitions.append("resume")
        super().resume()


@pytest.fixture
async def feed(broker: RabbitBroker) -> AsyncIterator[tuple[RevocationFeed, RecordingCache]]:
    cache = RecordingCache()
    feed = RevocationFeed(broker, cache)
    await feed.start(declare_topology=True)
    yield feed, cache
    await feed.stop()


def warm(cache: CredentialCache) -> None:
    cache.remember_principal(KEY, ALICE, generation=cache.generation)
    assert cache.principal(KEY) == ALICE


async def test_revocation_events_empty_the_cache_and_other_events_do_not(
    broker: RabbitBroker, feed: tuple[RevocationFeed, RecordingCache]
) -> None:
    _, cache = feed
    events = RabbitEventPublisher(broker, service="identity", declare_topology=True)
    assert cache.live

    warm(cache)
    await events.publish(
        JobProgressed(job_id="j-1", progress=50), subject="job/j-1", context=CONTEXT
    )
    await asyncio.sleep(0.3)
    assert cache.principal(KEY) == ALICE, "an unrelated event emptied the cache"

    revocations = [
        ApiKeyRevoked(key_id="k-1", owner="alice", reason="revoked"),
        SessionRevoked(session_id="s-1", username="alice", reason="logout"),
        RoleRemoved(username="alice", roles=["operator"]),
    ]
    for revocation in revocations:
        warm(cache)
        await events.publish(revocation, subject="alice", context=CONTEXT)
        assert await until(lambda: cache.principal(KEY) is None), revocation.routing_key


async def test_a_closed_feed_suspends_the_cache_until_it_is_restored(
    broker: RabbitBroker, feed: tuple[RevocationFeed, RecordingCache]
) -> None:
    revocation_feed, cache = feed
    warm(cache)
    feed_channel = revocation_feed._channel
    assert feed_channel is not None
    await close_under(feed_channel)

    # Suspended (and emptied) when the channel closed, resumed once aio-pika restored it.
    assert await until(lambda: cache.transitions == ["resume", "suspend", "resume"])
    assert cache.live
    assert cache.principal(KEY) is None
    warm(cache)
    events = RabbitEventPublisher(broker, service="identity", declare_topology=True)
    await events.publish(
        ApiKeyRevoked(key_id="k-2", owner="alice", reason="revoked"), subject="x", context=CONTEXT
    )
    assert await until(lambda: cache.principal(KEY) is None), "bindings were not restored"


async def test_stopping_the_feed_stops_the_cache(
    feed: tuple[RevocationFeed, RecordingCache],
) -> None:
    revocation_feed, cache = feed
    warm(cache)

    await revocation_feed.stop()

    assert not cache.live
    assert cache.principal(KEY) is None
