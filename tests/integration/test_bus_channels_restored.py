"""The kit's own channels on the real RabbitMQ, after aio-pika restored them.

A channel closed under its user (as by a lost connection) is reopened by aio-pika; what the
kit set up on it must work again: the request/reply client consumes its replies (RabbitMQ's
direct reply-to pseudo-queue) and the event publisher gets its confirms. (The batch consumer
and the revocation feed have theirs in test_batch_consumer.py and test_revocation_feed.py.)
"""

from __future__ import annotations

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import JobProgressed
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import AuthenticateRequest
from hypersdk_kit.bus import RabbitEventPublisher, RpcClient

from .conftest import close_under, until

QUESTION = AuthenticateRequest(
    token="hsdk_s_" + "x" * 43, context=RequestContext(request_id="rpc-client-test-1")
)


async def answer_code(client: RpcClient) -> ErrorCode:
    """Identity's answer to an unknown token: an error it sent, or ours if none came back."""
    with pytest.raises(ServiceError) as refused:
        await client.call(RpcQueue.IDENTITY_AUTHENTICATE, QUESTION)
    return refused.value.code


async def close_and_reopen(channel: aio_pika.abc.AbstractChannel) -> None:
    """Close ``channel`` under its user and wait until aio-pika has reopened the same object."""
    await close_under(channel)
    assert await until(lambda: not channel.is_closed), "aio-pika did not reopen the channel"


async def test_replies_arrive_again_after_the_channel_is_restored(broker: RabbitBroker) -> None:
    client = RpcClient(broker, timeout_seconds=5)
    assert await answer_code(client) is ErrorCode.UNAUTHENTICATED
    assert client._channel is not None

    await close_and_reopen(client._channel)

    for _ in range(3):
        assert await answer_code(client) is ErrorCode.UNAUTHENTICATED


async def test_events_are_confirmed_again_after_the_channel_is_restored(
    broker: RabbitBroker,
) -> None:
    events = RabbitEventPublisher(broker, service="exporter")
    progressed = JobProgressed(job_id="j-restored", progress=1)
    context = RequestContext(request_id="channel-restored-1")
    await events.publish(progressed, subject="job/j-restored", context=context)
    assert events._channel is not None

    await close_and_reopen(events._channel)

    for _ in range(3):  # returns only once the broker confirmed it
        await events.publish(progressed, subject="job/j-restored", context=context)
