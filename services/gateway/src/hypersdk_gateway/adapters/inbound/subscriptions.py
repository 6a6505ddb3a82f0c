"""Routes of ``/api/v1/subscriptions``: AMQP subscriptions for external consumers.

Every route needs system:configure; the webhooks service answers them over the bus
(docs/webhooks.md, decision 0054). A subscription's broker password appears in exactly one
answer, its creation, and in no log.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import (
    SUBSCRIPTION_ID_PATTERN,
    CreateSubscriptionRequest,
    IssuedSubscription,
    ListSubscriptionsRequest,
    SubscriptionIdRequest,
    SubscriptionView,
)
from hypersdk_gateway.adapters.inbound.middleware import context_of
from hypersdk_gateway.ports.outbound import Backend

SubscriptionIdParam = Annotated[
    str,
    Path(pattern=SUBSCRIPTION_ID_PATTERN, description="Subscription id (sb_ and 24 hex digits)."),
]


class SubscriptionBody(BaseModel):
    """An AMQP subscription to create."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=500, description="What it is for.")


def add_subscription_routes(api: APIRouter, backend: Backend, *, extra: dict[str, Any]) -> None:
    """The subscription routes on ``api``; ``extra`` marks them as needing system:configure."""
    tags: list[str | Any] = ["subscriptions"]

    def ctx(request: Request) -> Any:
        return context_of(request.scope)

    @api.get(
        "/subscriptions", response_model=list[SubscriptionView], tags=tags, openapi_extra=extra
    )
    async def list_subscriptions(request: Request) -> Any:
        """Every AMQP subscription, oldest first (never a password)."""
        return await backend.ask(
            RpcQueue.SUBSCRIPTIONS_LIST, ListSubscriptionsRequest(context=ctx(request))
        )

    @api.post(
        "/subscriptions",
        status_code=201,
        response_model=IssuedSubscription,
        tags=tags,
        openapi_extra=extra,
    )
    async def create_subscription(body: SubscriptionBody, request: Request) -> Any:
        """Create a subscription; the answer holds its broker password, shown this once."""
        return await backend.ask(
            RpcQueue.SUBSCRIPTIONS_CREATE,
            CreateSubscriptionRequest(**body.model_dump(), context=ctx(request)),
        )

    @api.get(
        "/subscriptions/{subscription_id}",
        response_model=SubscriptionView,
        tags=tags,
        openapi_extra=extra,
    )
    async def get_subscription(subscription_id: SubscriptionIdParam, request: Request) -> Any:
        """One subscription: its tap exchange, queue prefix and the queues it declared."""
        return await backend.ask(
            RpcQueue.SUBSCRIPTIONS_GET,
            SubscriptionIdRequest(subscription_id=subscription_id, context=ctx(request)),
        )

    @api.delete("/subscriptions/{subscription_id}", status_code=204, tags=tags, openapi_extra=extra)
    async def delete_subscription(
        subscription_id: SubscriptionIdParam, request: Request
    ) -> Response:
        """Remove a subscription: its broker user is refused at once, its queues and tap go."""
        await backend.ask(
            RpcQueue.SUBSCRIPTIONS_DELETE,
            SubscriptionIdRequest(subscription_id=subscription_id, context=ctx(request)),
        )
        return Response(status_code=204)
