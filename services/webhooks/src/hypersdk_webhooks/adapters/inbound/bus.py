"""Inbound adapters of the webhooks service: every event in, endpoints by request/reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.names import WEBHOOKS_EVENTS_QUEUE, RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    CreateSubscriptionRequest,
    CreateWebhookRequest,
    IssuedSubscription,
    IssuedWebhook,
    ListDeadLettersRequest,
    ListSubscriptionsRequest,
    ListWebhooksRequest,
    ReplayWebhookMessageRequest,
    SubscriptionIdRequest,
    SubscriptionView,
    UpdateWebhookRequest,
    WebhookAttemptView,
    WebhookIdRequest,
    WebhookMessageView,
    WebhookView,
)
from hypersdk_kit.bus import (
    Authorizer,
    BatchConsumer,
    Received,
    durable_queue,
    events_exchange,
    serve_rpc,
)
from hypersdk_webhooks.core.models import Attempt, Endpoint, Message, Subscription
from hypersdk_webhooks.core.service import WebhookService
from hypersdk_webhooks.core.subscriptions import (
    MAX_QUEUES,
    SubscriptionService,
    queue_prefix_of,
    tap_of,
)

SYSTEM_CONFIGURE = frozenset({Permission.SYSTEM_CONFIGURE.value})


def register_consumers(
    broker: RabbitBroker,
    service: WebhookService,
    *,
    prefetch: int,
    batch_size: int,
    batch_wait_seconds: float,
    guard: Authorizer,
    subscriptions: SubscriptionService,
    declare_topology: bool = True,
) -> BatchConsumer:
    """Make every genuine event its endpoints' messages; answer the endpoint requests.

    Events are taken in batches and acked once their messages are stored (one INSERT per
    batch), by the returned consumer: start it once the broker is started. Each comes with
    the broker-validated login that published it, which the core attributes it by.
    """

    async def take(batch: list[Received]) -> None:
        await service.take(batch)

    events = BatchConsumer(
        broker,
        durable_queue(WEBHOOKS_EVENTS_QUEUE, routing_key="#"),
        take,
        exchange=events_exchange(declare=declare_topology),
        prefetch=prefetch,
        max_batch=batch_size,
        max_wait_seconds=batch_wait_seconds,
    )
    register_rpc(broker, service, guard)
    register_subscription_rpc(broker, subscriptions, guard)
    return events


def register_rpc(broker: RabbitBroker, service: WebhookService, guard: Authorizer) -> None:
    """Every request needs system:configure (docs/webhooks.md)."""

    async def create(request: CreateWebhookRequest) -> IssuedWebhook:
        endpoint, secret = await service.register(
            url=request.url,
            event_types=list(request.event_types),
            description=request.description,
            timeout_seconds=request.timeout_seconds,
            max_in_flight=request.max_in_flight,
            context=request.context,
        )
        return IssuedWebhook(secret=secret, webhook=webhook_view(endpoint))

    async def list_all(request: ListWebhooksRequest) -> list[WebhookView]:
        return [webhook_view(endpoint) for endpoint in await service.list_endpoints()]

    async def get(request: WebhookIdRequest) -> WebhookView:
        return webhook_view(await service.get(request.endpoint_id))

    async def update(request: UpdateWebhookRequest) -> WebhookView:
        changed = await service.update(
            request.endpoint_id,
            url=request.url,
            event_types=None if request.event_types is None else list(request.event_types),
            description=request.description,
            timeout_seconds=request.timeout_seconds,
            max_in_flight=request.max_in_flight,
            context=request.context,
        )
        return webhook_view(changed)

    async def pause(request: WebhookIdRequest) -> WebhookView:
        return webhook_view(await service.pause(request.endpoint_id, context=request.context))

    async def resume(request: WebhookIdRequest) -> WebhookView:
        return webhook_view(await service.resume(request.endpoint_id, context=request.context))

    async def delete(request: WebhookIdRequest) -> None:
        await service.delete(request.endpoint_id, context=request.context)

    async def rotate(request: WebhookIdRequest) -> IssuedWebhook:
        endpoint, secret = await service.rotate_secret(request.endpoint_id, context=request.context)
        return IssuedWebhook(secret=secret, webhook=webhook_view(endpoint))

    async def test(request: WebhookIdRequest) -> WebhookAttemptView:
        return attempt_view(await service.send_test(request.endpoint_id, context=request.context))

    async def dead_letters(request: ListDeadLettersRequest) -> list[WebhookMessageView]:
        found = await service.dead_letters(request.endpoint_id, limit=request.limit)
        return [message_view(message) for message in found]

    async def replay(request: ReplayWebhookMessageRequest) -> WebhookMessageView:
        replayed = await service.replay(
            request.endpoint_id, request.message_id, context=request.context
        )
        return message_view(replayed)

    def serve(queue: RpcQueue, model: type[Any], handler: Callable[[Any], Awaitable[Any]]) -> None:
        serve_rpc(broker, queue, model, handler, permissions=SYSTEM_CONFIGURE, authorizer=guard)

    serve(RpcQueue.WEBHOOKS_CREATE, CreateWebhookRequest, create)
    serve(RpcQueue.WEBHOOKS_LIST, ListWebhooksRequest, list_all)
    serve(RpcQueue.WEBHOOKS_GET, WebhookIdRequest, get)
    serve(RpcQueue.WEBHOOKS_UPDATE, UpdateWebhookRequest, update)
    serve(RpcQueue.WEBHOOKS_PAUSE, WebhookIdRequest, pause)
    serve(RpcQueue.WEBHOOKS_RESUME, WebhookIdRequest, resume)
    serve(RpcQueue.WEBHOOKS_DELETE, WebhookIdRequest, delete)
    serve(RpcQueue.WEBHOOKS_ROTATE_SECRET, WebhookIdRequest, rotate)
    serve(RpcQueue.WEBHOOKS_TEST, WebhookIdRequest, test)
    serve(RpcQueue.WEBHOOKS_LIST_DEAD_LETTERS, ListDeadLettersRequest, dead_letters)
    serve(RpcQueue.WEBHOOKS_REPLAY, ReplayWebhookMessageRequest, replay)


def register_subscription_rpc(
    broker: RabbitBroker, subscriptions: SubscriptionService, guard: Authorizer
) -> None:
    """AMQP subscriptions; every request needs system:configure too (docs/webhooks.md)."""

    async def create(request: CreateSubscriptionRequest) -> IssuedSubscription:
        subscription, password = await subscriptions.create(
            description=request.description, context=request.context
        )
        return IssuedSubscription(
            username=subscription.id,
            password=password,
            vhost=subscriptions.vhost,
            subscription=subscription_view(subscription),
        )

    async def list_all(request: ListSubscriptionsRequest) -> list[SubscriptionView]:
        return [subscription_view(found) for found in await subscriptions.list()]

    async def get(request: SubscriptionIdRequest) -> SubscriptionView:
        return subscription_view(await subscriptions.get(request.subscription_id))

    async def delete(request: SubscriptionIdRequest) -> None:
        await subscriptions.delete(request.subscription_id, context=request.context)

    def serve(queue: RpcQueue, model: type[Any], handler: Callable[[Any], Awaitable[Any]]) -> None:
        serve_rpc(broker, queue, model, handler, permissions=SYSTEM_CONFIGURE, authorizer=guard)

    serve(RpcQueue.SUBSCRIPTIONS_CREATE, CreateSubscriptionRequest, create)
    serve(RpcQueue.SUBSCRIPTIONS_LIST, ListSubscriptionsRequest, list_all)
    serve(RpcQueue.SUBSCRIPTIONS_GET, SubscriptionIdRequest, get)
    serve(RpcQueue.SUBSCRIPTIONS_DELETE, SubscriptionIdRequest, delete)


def subscription_view(subscription: Subscription) -> SubscriptionView:
    """A subscription as the API shows it (no password, no digest)."""
    return SubscriptionView(
        id=subscription.id,
        description=subscription.description,
        created_at=subscription.created_at,
        exchange=tap_of(subscription.id),
        queue_prefix=queue_prefix_of(subscription.id),
        queues=sorted(subscription.queues),
        max_queues=MAX_QUEUES,
    )


def webhook_view(endpoint: Endpoint) -> WebhookView:
    """An endpoint as the API shows it (no secret)."""
    return WebhookView(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        description=endpoint.description,
        status=endpoint.status.value,
        timeout_seconds=endpoint.timeout_seconds,
        max_in_flight=endpoint.max_in_flight,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
        failing_since=endpoint.failing_since,
        consecutive_failures=endpoint.consecutive_failures,
        disabled_reason=endpoint.disabled_reason,
        previous_secret_valid_until=endpoint.keys.previous_until,
    )


def attempt_view(attempt: Attempt) -> WebhookAttemptView:
    """How an attempt ended."""
    return WebhookAttemptView(
        outcome=attempt.outcome.value,
        status=attempt.status,
        latency_ms=round(attempt.latency_ms, 3),
        address=attempt.address,
        detail=attempt.detail,
    )


def message_view(message: Message) -> WebhookMessageView:
    """A message as the API shows it (without its body)."""
    return WebhookMessageView(
        id=message.id,
        endpoint_id=message.endpoint_id,
        event_id=message.event_id,
        event_type=message.event_type,
        webhook_id=message.message_id,
        state=message.state.value,
        attempts=message.attempts,
        created_at=message.created_at,
        next_attempt_at=message.next_attempt_at,
        last_attempt=None if message.last_attempt is None else attempt_view(message.last_attempt),
    )
