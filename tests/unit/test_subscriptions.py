"""AMQP subscriptions with in-memory stores: what the broker is told each user may do."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_webhooks.adapters.outbound.memory import InMemorySubscriptionStore, InMemoryTaps
from hypersdk_webhooks.core.subscriptions import MAX_QUEUES, SubscriptionService, digest_of

VHOST = "hypersdk"


def _service(
    **kwargs: object,
) -> tuple[SubscriptionService, InMemorySubscriptionStore, InMemoryTaps, InMemoryUnitOfWork]:
    store, taps = InMemorySubscriptionStore(), InMemoryTaps()
    uow = InMemoryUnitOfWork(service="webhooks")
    service = SubscriptionService(
        store=store,
        taps=taps,
        uow=uow,
        vhost=VHOST,
        clock=lambda: datetime(2026, 12, 7, tzinfo=UTC),
        **kwargs,  # type: ignore[arg-type]
    )
    return service, store, taps, uow


async def test_a_subscription_gets_a_password_once_a_tap_and_an_event() -> None:
    service, store, taps, uow = _service()
    subscription, password = await service.create(description="siem")
    assert subscription.id in taps.open_taps
    stored = store.subscriptions[subscription.id]
    assert stored.password_digest == digest_of(password) != password
    assert password not in repr(stored)
    assert [e.routing_key for e in uow.events] == ["webhooks.subscription.created"]
    assert password not in uow.events[0].model_dump_json()
    assert await service.authenticate(subscription.id, password)
    assert not await service.authenticate(subscription.id, password + "x")
    assert not await service.authenticate(subscription.id, "")
    assert not await service.authenticate("sb_" + "0" * 24, password)
    assert not await service.authenticate("guest", password)


async def test_its_user_may_only_read_its_tap_and_use_its_own_queues() -> None:
    service, _, _, _ = _service()
    sub, _ = await service.create()
    other, _ = await service.create()
    own = f"sub.{sub.id}.events"

    async def may(resource: str, name: str, permission: str, vhost: str = VHOST) -> bool:
        return await service.may_use(
            sub.id, vhost=vhost, resource=resource, name=name, permission=permission
        )

    assert await service.may_enter(sub.id, VHOST)
    assert not await service.may_enter(sub.id, "/")
    # reading before declaring: not recorded yet, so refused
    assert not await may("queue", own, "read")
    assert await may("queue", own, "configure")
    assert await may("queue", own, "write")  # queue.bind needs write on the queue
    assert await may("queue", own, "read")
    assert await may("exchange", f"sub.{sub.id}", "read")
    refused = [
        ("queue", own, "configure", "/"),  # another virtual host
        ("exchange", f"sub.{sub.id}", "configure", VHOST),  # delete or redeclare its tap
        ("exchange", f"sub.{sub.id}", "write", VHOST),  # publish to it
        ("exchange", "hypersdk.public", "read", VHOST),  # bind to the public exchange itself
        ("exchange", "hypersdk.events", "read", VHOST),
        ("exchange", "hypersdk.events", "write", VHOST),  # publish, or dead-letter, into it
        ("exchange", "amq.default", "write", VHOST),
        ("queue", "audit.events", "read", VHOST),
        ("queue", f"sub.{other.id}.events", "configure", VHOST),  # another subscriber's
        ("queue", f"sub.{sub.id}", "configure", VHOST),  # the tap's name as a queue
        ("queue", f"sub.{sub.id}.", "configure", VHOST),  # no name after the prefix
        ("queue", f"sub.{sub.id}.a b", "configure", VHOST),
        ("queue", "amq.gen-abc", "configure", VHOST),  # server-named: not its own
        ("queue", own, "administer", VHOST),
        ("topic", f"sub.{sub.id}", "read", VHOST),  # topics are asked at /auth/topic
    ]
    for resource, name, permission, vhost in refused:
        assert not await may(resource, name, permission, vhost), (resource, name, permission)


async def test_binding_is_read_on_its_tap_with_any_key_and_nothing_is_written() -> None:
    service, _, _, _ = _service()
    sub, _ = await service.create()
    tap = f"sub.{sub.id}"

    async def route(exchange: str, permission: str, vhost: str = VHOST) -> bool:
        return await service.may_route(
            sub.id, vhost=vhost, exchange=exchange, permission=permission, routing_key="a.#"
        )

    assert await route(tap, "read")
    assert not await route(tap, "write")
    assert not await route("hypersdk.public", "read")
    assert not await route("hypersdk.events", "read")
    assert not await route(tap, "read", vhost="/")


async def test_a_subscription_declares_at_most_its_limit_of_queue_names() -> None:
    service, store, _, _ = _service()
    sub, _ = await service.create()
    names = [f"sub.{sub.id}.q{i}" for i in range(MAX_QUEUES + 1)]
    for name in names[:MAX_QUEUES]:
        assert await service.may_use(
            sub.id, vhost=VHOST, resource="queue", name=name, permission="configure"
        )
    assert not await service.may_use(
        sub.id, vhost=VHOST, resource="queue", name=names[-1], permission="configure"
    )
    # one already declared may be declared (or deleted) again
    assert await service.may_use(
        sub.id, vhost=VHOST, resource="queue", name=names[0], permission="configure"
    )
    assert store.subscriptions[sub.id].queues == tuple(names[:MAX_QUEUES])


async def test_deleting_refuses_the_user_at_once_and_removes_its_tap_and_queues() -> None:
    service, store, taps, uow = _service()
    sub, password = await service.create()
    queue = f"sub.{sub.id}.events"
    await service.may_use(sub.id, vhost=VHOST, resource="queue", name=queue, permission="configure")
    await service.delete(sub.id)
    assert not await service.authenticate(sub.id, password)
    assert not await service.may_enter(sub.id, VHOST)
    assert sub.id not in taps.open_taps
    assert taps.deleted_queues == [queue]
    assert sub.id not in store.subscriptions
    assert [e.routing_key for e in uow.events][-1] == "webhooks.subscription.deleted"
    with pytest.raises(ServiceError) as raised:
        await service.delete(sub.id)
    assert raised.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(ServiceError):
        await service.get(sub.id)


async def test_a_deletion_the_broker_could_not_finish_is_finished_later() -> None:
    service, store, taps, _ = _service()
    sub, password = await service.create()
    taps.fail = True
    await service.delete(sub.id)  # answered: the user is refused already
    assert not await service.authenticate(sub.id, password)
    assert not await service.may_use(
        sub.id, vhost=VHOST, resource="exchange", name=f"sub.{sub.id}", permission="read"
    )
    assert sub.id in taps.open_taps
    assert sub.id in store.subscriptions
    assert await service.list() == []
    with pytest.raises(ConnectionError):
        await service.tear_down()
    taps.fail = False
    assert await service.tear_down() == 1
    assert sub.id not in taps.open_taps
    assert sub.id not in store.subscriptions
    assert await service.tear_down() == 0


async def test_creation_needs_the_authorizer_room_and_a_short_description() -> None:
    off, _, _, _ = _service(enabled=False)
    with pytest.raises(ServiceError) as raised:
        await off.create()
    assert raised.value.code is ErrorCode.CONFLICT
    service, _, taps, _ = _service(max_subscriptions=2)
    await service.create()
    await service.create()
    with pytest.raises(ServiceError) as raised:
        await service.create()
    assert raised.value.code is ErrorCode.CONFLICT
    with pytest.raises(ServiceError) as raised:
        await _service()[0].create(description="x" * 501)
    assert raised.value.code is ErrorCode.VALIDATION_FAILED
    assert len(taps.open_taps) == 2


async def test_a_tap_that_cannot_be_opened_makes_no_subscription() -> None:
    service, store, taps, uow = _service()
    taps.fail = True
    with pytest.raises(ConnectionError):
        await service.create()
    assert store.subscriptions == {}
    assert uow.events == []
