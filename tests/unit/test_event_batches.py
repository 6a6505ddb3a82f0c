"""The batching event publisher: one message per batch, each caller answered by its confirm."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from hypersdk_contracts.envelope import CloudEvent, RequestContext
from hypersdk_contracts.events import RequestCompleted, UserCreated
from hypersdk_kit.event_batches import (
    BatchingEventPublisher,
    EventBatchSender,
    EventsNotConfirmedError,
)


class InMemoryBatchSender(EventBatchSender):
    """Keeps each sent message; confirms when the test lets it, or fails when told to."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str]]] = []
        self.confirmed: list[list[str]] = []
        self.confirm = asyncio.Event()
        self.confirm.set()
        self.failure: Exception | None = None

    async def send(self, routing_key: str, events: Sequence[CloudEvent]) -> None:
        ids = [str(event.data.get("route") or event.data.get("username")) for event in events]
        self.messages.append((routing_key, ids))
        await self.confirm.wait()
        if self.failure is not None:
            raise self.failure
        self.confirmed.append(ids)


def completed(route: str) -> RequestCompleted:
    return RequestCompleted(method="GET", route=route, status=200, duration_ms=1.0)


async def publish(publisher: BatchingEventPublisher, route: str) -> CloudEvent:
    return await publisher.publish(
        completed(route), subject=f"GET {route}", context=RequestContext(request_id=route)
    )


async def test_events_of_one_turn_go_in_one_message_and_each_caller_gets_its_own_event() -> None:
    sender = InMemoryBatchSender()
    publisher = BatchingEventPublisher(sender, service="gateway", max_batch=10)

    events = await asyncio.gather(*(publish(publisher, f"/r{index}") for index in range(3)))

    assert sender.messages == [("gateway.request.completed", ["/r0", "/r1", "/r2"])]
    assert [event.request_id for event in events] == ["/r0", "/r1", "/r2"]
    assert [event.source for event in events] == ["/hypersdk/gateway"] * 3


async def test_no_caller_returns_before_the_confirm_of_its_message() -> None:
    sender = InMemoryBatchSender()
    sender.confirm.clear()
    publisher = BatchingEventPublisher(sender, service="gateway")

    callers = [asyncio.create_task(publish(publisher, f"/r{index}")) for index in range(2)]
    await asyncio.sleep(0.05)
    assert sender.messages == [("gateway.request.completed", ["/r0", "/r1"])]
    assert not any(caller.done() for caller in callers)

    sender.confirm.set()
    await asyncio.gather(*callers)
    assert sender.confirmed == [["/r0", "/r1"]]


async def test_a_message_that_is_not_confirmed_fails_every_caller_it_held() -> None:
    sender = InMemoryBatchSender()
    sender.failure = TimeoutError()
    publisher = BatchingEventPublisher(sender, service="gateway")

    outcomes = await asyncio.gather(
        *(publish(publisher, f"/r{index}") for index in range(3)), return_exceptions=True
    )

    assert [type(outcome) for outcome in outcomes] == [EventsNotConfirmedError] * 3
    assert all(isinstance(outcome.__cause__, TimeoutError) for outcome in outcomes)
    sender.failure = None  # the next batch is confirmed again
    assert (await publish(publisher, "/after")).request_id == "/after"


async def test_events_arriving_during_a_confirm_wait_for_it_then_go_together() -> None:
    sender = InMemoryBatchSender()
    sender.confirm.clear()
    publisher = BatchingEventPublisher(sender, service="gateway", max_wait_seconds=60)
    first = asyncio.create_task(publish(publisher, "/first"))
    await asyncio.sleep(0.01)

    later = []
    for index in range(3):
        later.append(asyncio.create_task(publish(publisher, f"/later{index}")))
        await asyncio.sleep(0.005)  # separate turns of the loop
    assert sender.messages == [("gateway.request.completed", ["/first"])]

    sender.confirm.set()
    await asyncio.wait_for(asyncio.gather(first, *later), timeout=1)  # not after the 60 s wait
    assert [ids for _, ids in sender.messages] == [["/first"], ["/later0", "/later1", "/later2"]]


async def test_a_batch_goes_out_after_the_wait_even_while_another_is_unconfirmed() -> None:
    sender = InMemoryBatchSender()
    sender.confirm.clear()
    publisher = BatchingEventPublisher(sender, service="gateway", max_wait_seconds=0.05)
    first = asyncio.create_task(publish(publisher, "/first"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(publish(publisher, "/second"))

    await asyncio.sleep(0.02)
    assert len(sender.messages) == 1  # collecting, within the wait
    await asyncio.sleep(0.1)
    assert [ids for _, ids in sender.messages] == [["/first"], ["/second"]]

    sender.confirm.set()
    await asyncio.gather(first, second)


async def test_a_full_batch_goes_out_at_once() -> None:
    sender = InMemoryBatchSender()
    sender.confirm.clear()
    publisher = BatchingEventPublisher(sender, service="gateway", max_batch=3, max_wait_seconds=60)
    first = asyncio.create_task(publish(publisher, "/first"))
    await asyncio.sleep(0.01)

    callers = [asyncio.create_task(publish(publisher, f"/r{index}")) for index in range(4)]
    await asyncio.sleep(0.01)

    assert [ids for _, ids in sender.messages] == [["/first"], ["/r0", "/r1", "/r2"]]
    sender.confirm.set()
    await asyncio.gather(first, *callers)
    assert [ids for _, ids in sender.messages][-1] == ["/r3"]


async def test_events_of_different_types_never_share_a_message() -> None:
    sender = InMemoryBatchSender()
    publisher = BatchingEventPublisher(sender, service="identity")

    await asyncio.gather(
        publish(publisher, "/r0"),
        publisher.publish(UserCreated(username="ann"), subject="user/ann", context=None),
        publish(publisher, "/r1"),
    )

    assert sorted(sender.messages) == [
        ("gateway.request.completed", ["/r0", "/r1"]),
        ("identity.user.created", ["ann"]),
    ]


async def test_a_caller_that_goes_away_leaves_its_event_in_the_batch() -> None:
    sender = InMemoryBatchSender()
    sender.confirm.clear()
    publisher = BatchingEventPublisher(sender, service="gateway")
    gone = asyncio.create_task(publish(publisher, "/gone"))
    await asyncio.sleep(0.01)

    gone.cancel()
    sender.confirm.set()
    await publisher.close()

    assert sender.confirmed == [["/gone"]]


async def test_closing_sends_what_was_collected_and_waits_for_every_confirm() -> None:
    sender = InMemoryBatchSender()
    sender.confirm.clear()
    publisher = BatchingEventPublisher(sender, service="gateway", max_wait_seconds=60)
    first = asyncio.create_task(publish(publisher, "/first"))
    await asyncio.sleep(0.01)
    collected = [asyncio.create_task(publish(publisher, f"/r{index}")) for index in range(2)]
    await asyncio.sleep(0.01)

    closing = asyncio.create_task(publisher.close())
    await asyncio.sleep(0.01)
    assert [ids for _, ids in sender.messages] == [["/first"], ["/r0", "/r1"]]
    assert not closing.done()  # still waiting for the confirms

    sender.confirm.set()
    await closing
    assert sender.confirmed == [["/first"], ["/r0", "/r1"]]
    await asyncio.gather(first, *collected)
    with pytest.raises(EventsNotConfirmedError):
        await publish(publisher, "/late")
