"""Event subscribers of the policy service."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.envelope import CloudEvent
from hypersdk_contracts.events import UserDeleted
from hypersdk_contracts.names import POLICY_USER_DELETIONS_QUEUE, RoutingKey
from hypersdk_kit.bus import (
    PoisonMessageError,
    durable_queue,
    events_exchange,
    subscribe_envelopes,
)
from hypersdk_policy.core.service import PolicyService


def register_subscribers(
    broker: RabbitBroker, policy: PolicyService, *, declare_topology: bool
) -> None:
    """Remove a deleted user's roles, from policy's own durable queue.

    Only identity may publish ``identity.*`` routing keys (RabbitMQ topic permissions), so an
    event on this binding comes from identity. A handler failure is retried with back-off and
    dead-lettered after the queue's delivery limit, never lost (decision 0026).
    """

    async def user_deleted(event: CloudEvent) -> None:
        if event.routing_key != RoutingKey.USER_DELETED:
            raise PoisonMessageError(event.type)
        deleted = UserDeleted.model_validate(event.data)
        await policy.user_deleted(deleted.username, generation=deleted.generation)

    subscribe_envelopes(
        broker,
        durable_queue(POLICY_USER_DELETIONS_QUEUE, routing_key=RoutingKey.USER_DELETED),
        user_deleted,
        exchange=events_exchange(declare=declare_topology),
    )
