"""The batch consumer: envelopes handled in batches, acked after their batch, poison isolated."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from hypersdk_contracts.envelope import (
    CLOUDEVENTS_BATCH_CONTENT_TYPE,
    CloudEvent,
    RequestContext,
    batch_to_json,
    new_event,
)
from hypersdk_contracts.events import UserCreated
from hypersdk_kit.bus import EnvelopeBatcher, PoisonMessageError, Received


class FakeChannel:
    """Settles deliveries as RabbitMQ does: each once, ``multiple`` acks included."""

    def __init__(self) -> None:
        self.unsettled: list[FakeDelivery] = []
        self.frames = 0

    def delivery(
        self, username: str, *, deliveries: int = 0, user_id: str | None = "identity"
    ) -> FakeDelivery:
        body = user_created(username).model_dump_json(by_alias=True, exclude_none=True).encode()
        return self.deliver(FakeDelivery(self, body, deliveries=deliveries, user_id=user_id))

    def batch(self, *usernames: str, deliveries: int = 0) -> FakeDelivery:
        """One message holding an event per user, in the CloudEvents JSON batch format."""
        body = batch_to_json([user_created(username) for username in usernames])
        return self.deliver(
            FakeDelivery(
                self, body, deliveries=deliveries, content_type=CLOUDEVENTS_BATCH_CONTENT_TYPE
            )
        )

    def deliver(self, delivery: FakeDelivery) -> FakeDelivery:
        self.unsettled.append(delivery)
        return delivery

    def settle(self, delivery: FakeDelivery, how: str, *, multiple: bool = False) -> None:
        self.frames += 1
        if delivery not in self.unsettled:  # RabbitMQ closes the channel: unknown delivery tag
            raise AssertionError(f"{delivery.body[:40]!r} was settled twice")
        upto = self.unsettled.index(delivery) + 1 if multiple else None
        covered = self.unsettled[:upto] if multiple else [delivery]
        for item in covered:
            item.settled = how
            self.unsettled.remove(item)


def user_created(username: str) -> CloudEvent:
    return new_event(
        service="identity",
        routing_key="identity.user.created",
        data=UserCreated(username=username),
        subject=f"user/{username}",
        context=RequestContext(actor="root"),
    )


class FakeDelivery:
    """A delivered message that remembers how it was settled."""

    def __init__(
        self,
        channel: FakeChannel,
        body: bytes,
        *,
        deliveries: int = 0,
        content_type: str | None = "application/cloudevents+json",
        user_id: str | None = None,
    ) -> None:
        self.channel = channel
        self.body = body
        self.user_id = user_id
        self.message_id: str | None = None
        self.content_type = content_type
        self.headers: Any = {"x-delivery-count": deliveries}
        self.settled: str | None = None

    async def ack(self, multiple: bool = False) -> None:
        self.channel.settle(self, "ack", multiple=multiple)

    async def nack(self, *, requeue: bool = True) -> None:
        self.channel.settle(self, "requeue" if requeue else "nack")

    async def reject(self, *, requeue: bool = False) -> None:
        self.channel.settle(self, "dead-letter")


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until ``condition`` holds (a loaded machine may take more than a few ms)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.001)


async def settled(*deliveries: FakeDelivery) -> None:
    """Wait until every delivery is acked, requeued or dead-lettered."""
    await until(lambda: all(item.settled is not None for item in deliveries))


class Recorder:
    """A batch handler that records batches and can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.logins: list[str | None] = []
        self.poison: set[str] = set()
        self.down = False
        self.release = asyncio.Event()
        self.release.set()
        self.active = 0
        self.most_active = 0

    async def __call__(self, events: list[Received]) -> None:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await self.handle(events)
        finally:
            self.active -= 1

    async def handle(self, events: list[Received]) -> None:
        await self.release.wait()
        await asyncio.sleep(0.001)  # room for another batch to start, were that allowed
        if self.down:
            raise ConnectionError("database unavailable")
        names = [str(received.event.data["username"]) for received in events]
        if self.poison & set(names):
            raise PoisonMessageError("a user name is poison")
        self.batches.append(names)
        self.logins += [received.user_id for received in events]


async def test_a_full_batch_is_handled_at_once_in_delivery_order_then_acked() -> None:
    recorder = Recorder()
    batcher = EnvelopeBatcher(recorder, max_batch=3, max_wait_seconds=60)
    channel = FakeChannel()
    deliveries = [channel.delivery(name) for name in ("a", "b", "c")]

    for item in deliveries:
        await batcher.add(item)
    await settled(*deliveries)

    assert recorder.batches == [["a", "b", "c"]]
    assert [item.settled for item in deliveries] == ["ack"] * 3
    assert channel.frames == 1  # one multiple ack for the batch


async def test_each_envelope_comes_with_the_login_that_published_it() -> None:
    recorder = Recorder()
    batcher = EnvelopeBatcher(recorder, max_batch=3, max_wait_seconds=60)
    channel = FakeChannel()

    for name, login in (("a", "identity"), ("b", "exporter"), ("c", None)):
        await batcher.add(channel.delivery(name, user_id=login))
    await until(lambda: len(recorder.logins) == 3)

    assert recorder.batches == [["a", "b", "c"]]
    assert recorder.logins == ["identity", "exporter", None]


async def test_a_short_batch_waits_at_most_the_wait() -> None:
    recorder = Recorder()
    batcher = EnvelopeBatcher(recorder, max_batch=100, max_wait_seconds=0.05)
    lone = FakeChannel().delivery("a")

    await batcher.add(lone)
    assert recorder.batches == []
    await asyncio.sleep(0.15)

    assert recorder.batches == [["a"]]
    assert lone.settled == "ack"


async def test_nothing_is_acked_before_its_batch_is_handled() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = EnvelopeBatcher(recorder, max_batch=2, max_wait_seconds=60)
    channel = FakeChannel()
    deliveries = [channel.delivery("a"), channel.delivery("b"), channel.delivery("c")]
    for item in deliveries[:2]:
        await batcher.add(item)
    await asyncio.sleep(0.01)  # the batch of a and b is being handled
    await batcher.add(deliveries[2])
    await asyncio.sleep(0.01)
    assert [item.settled for item in deliveries] == [None, None, None]

    recorder.release.set()
    await asyncio.sleep(0.01)

    # "c" came while the first batch was being handled: its ack did not cover it.
    assert [item.settled for item in deliveries] == ["ack", "ack", None]


async def test_a_message_that_is_no_envelope_is_dead_lettered_alone() -> None:
    recorder = Recorder()
    batcher = EnvelopeBatcher(recorder, max_batch=2, max_wait_seconds=60)
    channel = FakeChannel()
    garbage = channel.deliver(FakeDelivery(channel, b"not json"))
    good = [channel.delivery("a"), channel.delivery("b")]

    await batcher.add(garbage)
    for item in good:
        await batcher.add(item)
    await settled(garbage, *good)

    assert garbage.settled == "dead-letter"
    assert recorder.batches == [["a", "b"]]
    assert [item.settled for item in good] == ["ack", "ack"]


async def test_only_the_poison_event_of_a_batch_is_dead_lettered() -> None:
    recorder = Recorder()
    recorder.poison = {"b"}
    batcher = EnvelopeBatcher(recorder, max_batch=3, max_wait_seconds=60)
    channel = FakeChannel()
    deliveries = [channel.delivery(name) for name in ("a", "b", "c")]

    for item in deliveries:
        await batcher.add(item)
    await settled(*deliveries)

    assert recorder.batches == [["a"], ["c"]]
    assert [item.settled for item in deliveries] == ["ack", "dead-letter", "ack"]


async def test_a_failed_batch_is_requeued_whole_after_a_backoff() -> None:
    recorder = Recorder()
    recorder.down = True
    batcher = EnvelopeBatcher(recorder, max_batch=2, max_wait_seconds=60)
    channel = FakeChannel()
    deliveries = [channel.delivery("a"), channel.delivery("b")]

    for item in deliveries:
        await batcher.add(item)
    await asyncio.sleep(0.05)
    assert [item.settled for item in deliveries] == [None, None]  # backing off
    await asyncio.sleep(0.3)

    assert [item.settled for item in deliveries] == ["requeue", "requeue"]
    assert recorder.batches == []


@pytest.mark.parametrize("size", [1, 7])
async def test_batches_are_handled_one_at_a_time(size: int) -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = EnvelopeBatcher(recorder, max_batch=size, max_wait_seconds=0.01)
    names = [f"u{index}" for index in range(3 * size)]
    channel = FakeChannel()

    for name in names:
        await batcher.add(channel.delivery(name))
        await asyncio.sleep(0.005)  # a batch may start meanwhile
    recorder.release.set()
    await asyncio.sleep(0.1)

    handled = [name for batch in recorder.batches for name in batch]
    assert handled == names
    assert recorder.most_active == 1
    assert channel.unsettled == []


class LostChannelDelivery(FakeDelivery):
    """A delivery whose channel closed before it could be settled."""

    async def ack(self, multiple: bool = False) -> None:
        raise ConnectionError("channel closed")


async def test_an_ack_that_cannot_be_sent_does_not_stop_the_next_batch() -> None:
    recorder = Recorder()
    batcher = EnvelopeBatcher(recorder, max_batch=2, max_wait_seconds=60)
    lost, restored = FakeChannel(), FakeChannel()  # the connection dropped, then came back
    a = lost.delivery("a")
    b = lost.deliver(LostChannelDelivery(lost, FakeChannel().delivery("b").body))
    second = [restored.delivery("c"), restored.delivery("d")]

    for batch in ([a, b], second):
        for item in batch:
            await batcher.add(item)
        await asyncio.sleep(0.01)

    # RabbitMQ redelivers a and b on the new channel; recording them again is a no-op.
    assert recorder.batches == [["a", "b"], ["c", "d"]]
    assert [a.settled, b.settled] == [None, None]
    assert [item.settled for item in second] == ["ack", "ack"]


# ---- batch messages (CloudEvents JSON batch format) -------------------------------------------


async def test_a_batch_message_is_handled_with_single_envelopes_and_acked_once_stored() -> None:
    recorder = Recorder()
    batcher = EnvelopeBatcher(recorder, max_batch=4, max_wait_seconds=60)
    channel = FakeChannel()
    deliveries = [channel.delivery("a"), channel.batch("b", "c"), channel.delivery("d")]

    for item in deliveries:
        await batcher.add(item)
    await settled(*deliveries)

    assert recorder.batches == [["a", "b", "c", "d"]]  # four envelopes fill the batch
    assert [item.settled for item in deliveries] == ["ack"] * 3
    assert channel.frames == 1


async def test_a_batch_message_is_never_split_nor_acked_before_all_its_events_are_stored() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = EnvelopeBatcher(recorder, max_batch=2, max_wait_seconds=60)
    channel = FakeChannel()
    message = channel.batch("a", "b", "c")

    await batcher.add(message)
    await asyncio.sleep(0.01)
    assert message.settled is None  # being stored

    recorder.release.set()
    await asyncio.sleep(0.01)
    assert recorder.batches == [["a", "b", "c"]]
    assert message.settled == "ack"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"specversion": "1.0"}', b'[{"specversion": "1.0"}]', b"[1, 2]"],
)
async def test_a_malformed_batch_message_is_dead_lettered_alone(body: bytes) -> None:
    recorder = Recorder()
    batcher = EnvelopeBatcher(recorder, max_batch=2, max_wait_seconds=60)
    channel = FakeChannel()
    malformed = channel.deliver(
        FakeDelivery(channel, body, content_type=CLOUDEVENTS_BATCH_CONTENT_TYPE)
    )
    good = [channel.delivery("a"), channel.batch("b", "c")]

    await batcher.add(malformed)
    for item in good:
        await batcher.add(item)
    await settled(malformed, *good)

    assert malformed.settled == "dead-letter"
    assert recorder.batches == [["a", "b", "c"]]
    assert [item.settled for item in good] == ["ack", "ack"]


async def test_an_array_without_the_batch_content_type_is_no_envelope() -> None:
    recorder = Recorder()
    batcher = EnvelopeBatcher(recorder, max_batch=1, max_wait_seconds=60)
    channel = FakeChannel()
    disguised = channel.deliver(
        FakeDelivery(channel, batch_to_json([user_created("a")]), content_type=None)
    )

    await batcher.add(disguised)
    await settled(disguised)

    assert disguised.settled == "dead-letter"
    assert recorder.batches == []


async def test_a_batch_message_with_a_poison_event_is_dead_lettered_after_its_others() -> None:
    recorder = Recorder()
    recorder.poison = {"c"}
    batcher = EnvelopeBatcher(recorder, max_batch=5, max_wait_seconds=60)
    channel = FakeChannel()
    deliveries = [channel.delivery("a"), channel.batch("b", "c", "d"), channel.delivery("e")]

    for item in deliveries:
        await batcher.add(item)
    await asyncio.sleep(0.1)

    assert recorder.batches == [["a"], ["b"], ["d"], ["e"]]
    assert [item.settled for item in deliveries] == ["ack", "dead-letter", "ack"]
    assert channel.unsettled == []


async def test_a_failed_batch_message_is_requeued_whole() -> None:
    recorder = Recorder()
    recorder.down = True
    batcher = EnvelopeBatcher(recorder, max_batch=2, max_wait_seconds=60)
    message = FakeChannel().batch("a", "b")

    await batcher.add(message)
    await asyncio.sleep(0.3)

    assert message.settled == "requeue"
    assert recorder.batches == []
