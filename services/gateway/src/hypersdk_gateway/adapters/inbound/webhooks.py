"""Routes of ``/api/v1/webhooks``: endpoints, their tests, secrets and dead letters.

Every route needs system:configure; the webhooks service answers them over the bus
(docs/webhooks.md). A signing secret appears in exactly two answers, the registration and a
rotation, and in no log.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import (
    WEBHOOK_ID_PATTERN,
    WEBHOOK_MESSAGE_ID_PATTERN,
    CreateWebhookRequest,
    IssuedWebhook,
    ListDeadLettersRequest,
    ListWebhooksRequest,
    ReplayWebhookMessageRequest,
    UpdateWebhookRequest,
    WebhookAttemptView,
    WebhookIdRequest,
    WebhookMessageView,
    WebhookView,
)
from hypersdk_gateway.adapters.inbound.middleware import context_of
from hypersdk_gateway.ports.outbound import Backend

WebhookIdParam = Annotated[
    str, Path(pattern=WEBHOOK_ID_PATTERN, description="Endpoint id (ep_ and 24 hex digits).")
]
MessageIdParam = Annotated[
    str, Path(pattern=WEBHOOK_MESSAGE_ID_PATTERN, description="Message id (wm_ and 24 hex).")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookBody(_Body):
    """A webhook endpoint to register."""

    url: str = Field(min_length=1, max_length=2048, description="http or https URL.")
    event_types: list[str] = Field(
        min_length=1,
        max_length=32,
        description="Routing-key patterns: `*` one word, `#` any number (`exporter.job.*`).",
    )
    description: str = Field(default="", max_length=500)
    timeout_seconds: float = Field(default=10.0, ge=1, le=30)
    max_in_flight: int = Field(default=4, ge=1, le=16)


class WebhookChangesBody(_Body):
    """What to change; the rest stays."""

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=32)
    description: str | None = Field(default=None, max_length=500)
    timeout_seconds: float | None = Field(default=None, ge=1, le=30)
    max_in_flight: int | None = Field(default=None, ge=1, le=16)


def add_webhook_routes(api: APIRouter, backend: Backend, *, extra: dict[str, Any]) -> None:
    """The webhook routes on ``api``; ``extra`` marks them as needing system:configure."""
    tags: list[str | Any] = ["webhooks"]

    def ctx(request: Request) -> Any:
        return context_of(request.scope)

    @api.get("/webhooks", response_model=list[WebhookView], tags=tags, openapi_extra=extra)
    async def list_webhooks(request: Request) -> Any:
        """Every webhook endpoint, oldest first (never a secret)."""
        return await backend.ask(RpcQueue.WEBHOOKS_LIST, ListWebhooksRequest(context=ctx(request)))

    @api.post(
        "/webhooks",
        status_code=201,
        response_model=IssuedWebhook,
        tags=tags,
        openapi_extra=extra,
    )
    async def create_webhook(body: WebhookBody, request: Request) -> Any:
        """Register an endpoint; the answer holds its signing secret, shown this once."""
        return await backend.ask(
            RpcQueue.WEBHOOKS_CREATE,
            CreateWebhookRequest(**body.model_dump(), context=ctx(request)),
        )

    @api.get("/webhooks/{webhook_id}", response_model=WebhookView, tags=tags, openapi_extra=extra)
    async def get_webhook(webhook_id: WebhookIdParam, request: Request) -> Any:
        """One endpoint: its settings, status and failure record."""
        return await backend.ask(
            RpcQueue.WEBHOOKS_GET, WebhookIdRequest(endpoint_id=webhook_id, context=ctx(request))
        )

    @api.patch("/webhooks/{webhook_id}", response_model=WebhookView, tags=tags, openapi_extra=extra)
    async def update_webhook(
        webhook_id: WebhookIdParam, body: WebhookChangesBody, request: Request
    ) -> Any:
        """Change an endpoint's URL, filters, description, timeout or in-flight limit."""
        return await backend.ask(
            RpcQueue.WEBHOOKS_UPDATE,
            UpdateWebhookRequest(
                endpoint_id=webhook_id, **body.model_dump(exclude_none=True), context=ctx(request)
            ),
        )

    @api.delete("/webhooks/{webhook_id}", status_code=204, tags=tags, openapi_extra=extra)
    async def delete_webhook(webhook_id: WebhookIdParam, request: Request) -> Response:
        """Remove an endpoint and its messages (undelivered ones too)."""
        await backend.ask(
            RpcQueue.WEBHOOKS_DELETE,
            WebhookIdRequest(endpoint_id=webhook_id, context=ctx(request)),
        )
        return Response(status_code=204)

    async def by_id(queue: RpcQueue, webhook_id: str, request: Request) -> Any:
        return await backend.ask(
            queue, WebhookIdRequest(endpoint_id=webhook_id, context=ctx(request))
        )

    @api.post(
        "/webhooks/{webhook_id}/pause", response_model=WebhookView, tags=tags, openapi_extra=extra
    )
    async def pause_webhook(webhook_id: WebhookIdParam, request: Request) -> Any:
        """Stop sending; messages wait and go out once it is resumed."""
        return await by_id(RpcQueue.WEBHOOKS_PAUSE, webhook_id, request)

    @api.post(
        "/webhooks/{webhook_id}/resume", response_model=WebhookView, tags=tags, openapi_extra=extra
    )
    async def resume_webhook(webhook_id: WebhookIdParam, request: Request) -> Any:
        """Send again to a paused or disabled endpoint; its failure record starts over."""
        return await by_id(RpcQueue.WEBHOOKS_RESUME, webhook_id, request)

    @api.post(
        "/webhooks/{webhook_id}/rotate",
        status_code=201,
        response_model=IssuedWebhook,
        tags=tags,
        openapi_extra=extra,
    )
    async def rotate_webhook_secret(webhook_id: WebhookIdParam, request: Request) -> Any:
        """A new signing secret, shown this once; the old one signs too during the overlap."""
        return await by_id(RpcQueue.WEBHOOKS_ROTATE_SECRET, webhook_id, request)

    @api.post(
        "/webhooks/{webhook_id}/test",
        response_model=WebhookAttemptView,
        tags=tags,
        openapi_extra=extra,
    )
    async def test_webhook(webhook_id: WebhookIdParam, request: Request) -> Any:
        """Send one signed test event now, whatever the endpoint's status; how it ended."""
        return await by_id(RpcQueue.WEBHOOKS_TEST, webhook_id, request)

    @api.get(
        "/webhooks/{webhook_id}/dead-letters",
        response_model=list[WebhookMessageView],
        tags=tags,
        openapi_extra=extra,
    )
    async def webhook_dead_letters(
        webhook_id: WebhookIdParam,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Any:
        """Messages whose every retry failed, newest first."""
        return await backend.ask(
            RpcQueue.WEBHOOKS_LIST_DEAD_LETTERS,
            ListDeadLettersRequest(endpoint_id=webhook_id, limit=limit, context=ctx(request)),
        )

    @api.post(
        "/webhooks/{webhook_id}/dead-letters/{message_id}/replay",
        response_model=WebhookMessageView,
        tags=tags,
        openapi_extra=extra,
    )
    async def replay_webhook_message(
        webhook_id: WebhookIdParam, message_id: MessageIdParam, request: Request
    ) -> Any:
        """Put a dead letter back, due now, its retries started over (same webhook-id)."""
        return await backend.ask(
            RpcQueue.WEBHOOKS_REPLAY,
            ReplayWebhookMessageRequest(
                endpoint_id=webhook_id, message_id=message_id, context=ctx(request)
            ),
        )
