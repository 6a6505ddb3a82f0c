"""The gateway's /api/v1/subscriptions routes: system:configure, answered by the bus."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import (
    CreateSubscriptionRequest,
    IssuedSubscription,
    ListSubscriptionsRequest,
    SubscriptionIdRequest,
    SubscriptionView,
)
from hypersdk_gateway.adapters.inbound.operations import ROUTE_OPERATIONS
from tests.unit.test_gateway_chain import Gateway, assert_envelope, bearer

SUB_ID = "sb_" + "0123456789abcdef01234567"
PASSWORD = "broker-password-shown-once"


def _view(sub_id: str, description: str) -> SubscriptionView:
    return SubscriptionView(
        id=sub_id,
        description=description,
        created_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        exchange=f"sub.{sub_id}",
        queue_prefix=f"sub.{sub_id}.",
        queues=[],
        max_queues=4,
    )


def _serve_subscriptions(gateway: Gateway) -> dict[str, SubscriptionView]:
    """Answer the four subscription queues from a dict, as the webhooks service would."""
    found: dict[str, SubscriptionView] = {}

    async def create(request: CreateSubscriptionRequest) -> IssuedSubscription:
        view = _view(SUB_ID, request.description)
        found[view.id] = view
        return IssuedSubscription(
            username=view.id, password=PASSWORD, vhost="hypersdk", subscription=view
        )

    async def list_all(_: ListSubscriptionsRequest) -> list[SubscriptionView]:
        return list(found.values())

    async def get(request: SubscriptionIdRequest) -> SubscriptionView:
        if request.subscription_id not in found:
            raise ServiceError(ErrorCode.NOT_FOUND, "No such subscription.")
        return found[request.subscription_id]

    async def delete(request: SubscriptionIdRequest) -> None:
        if found.pop(request.subscription_id, None) is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No such subscription.")

    routes: dict[str, Any] = {
        RpcQueue.SUBSCRIPTIONS_CREATE: (CreateSubscriptionRequest, create),
        RpcQueue.SUBSCRIPTIONS_LIST: (ListSubscriptionsRequest, list_all),
        RpcQueue.SUBSCRIPTIONS_GET: (SubscriptionIdRequest, get),
        RpcQueue.SUBSCRIPTIONS_DELETE: (SubscriptionIdRequest, delete),
    }
    gateway.backend._routes.update(routes)
    return found


async def test_an_admin_creates_lists_gets_and_deletes_a_subscription(gateway: Gateway) -> None:
    found = _serve_subscriptions(gateway)
    admin = bearer(await gateway.login("root"))

    created = await gateway.client.post(
        "/api/v1/subscriptions", json={"description": "siem"}, headers=admin
    )
    listed = await gateway.client.get("/api/v1/subscriptions", headers=admin)
    one = await gateway.client.get(f"/api/v1/subscriptions/{SUB_ID}", headers=admin)
    deleted = await gateway.client.delete(f"/api/v1/subscriptions/{SUB_ID}", headers=admin)
    gone = await gateway.client.get(f"/api/v1/subscriptions/{SUB_ID}", headers=admin)

    assert created.status_code == 201, created.text
    issued = created.json()
    assert (issued["username"], issued["password"], issued["vhost"]) == (
        SUB_ID,
        PASSWORD,
        "hypersdk",
    )
    assert issued["subscription"]["description"] == "siem"
    assert listed.status_code == 200, listed.text
    assert [view["id"] for view in listed.json()] == [SUB_ID]
    assert one.status_code == 200, one.text
    assert one.json()["exchange"] == f"sub.{SUB_ID}"
    assert all(PASSWORD not in r.text for r in (listed, one))
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert_envelope(gone, 404, "not_found")
    assert found == {}
    forwarded = [
        (queue, request)
        for queue, request in gateway.backend.requests
        if queue.startswith("webhooks.rpc.")
    ]
    assert [queue for queue, _ in forwarded] == [
        RpcQueue.SUBSCRIPTIONS_CREATE,
        RpcQueue.SUBSCRIPTIONS_LIST,
        RpcQueue.SUBSCRIPTIONS_GET,
        RpcQueue.SUBSCRIPTIONS_DELETE,
        RpcQueue.SUBSCRIPTIONS_GET,
    ]
    assert all(request.context.actor == "root" for _, request in forwarded)


async def test_subscriptions_need_system_configure(gateway: Gateway) -> None:
    _serve_subscriptions(gateway)
    operator = bearer(await gateway.login("olga"))

    refused = [
        await gateway.client.get("/api/v1/subscriptions", headers=operator),
        await gateway.client.post("/api/v1/subscriptions", json={}, headers=operator),
        await gateway.client.get(f"/api/v1/subscriptions/{SUB_ID}", headers=operator),
        await gateway.client.delete(f"/api/v1/subscriptions/{SUB_ID}", headers=operator),
    ]

    for response in refused:
        assert_envelope(response, 403, "forbidden")
    assert not [queue for queue in gateway.backend.asked if queue.startswith("webhooks.rpc.")]


async def test_a_malformed_subscription_request_is_refused_before_the_bus(
    gateway: Gateway,
) -> None:
    _serve_subscriptions(gateway)
    admin = bearer(await gateway.login("root"))

    refused = [
        await gateway.client.post(
            "/api/v1/subscriptions", json={"description": "x", "queues": 3}, headers=admin
        ),
        await gateway.client.post(
            "/api/v1/subscriptions", json={"description": "x" * 501}, headers=admin
        ),
        await gateway.client.get("/api/v1/subscriptions/not-an-id", headers=admin),
        await gateway.client.delete("/api/v1/subscriptions/ep_" + "0" * 24, headers=admin),
    ]

    for response in refused:
        assert_envelope(response, 422, "validation_failed")
    assert not [queue for queue in gateway.backend.asked if queue.startswith("webhooks.rpc.")]


async def test_the_document_tags_each_subscription_route_with_system_configure(
    gateway: Gateway,
) -> None:
    document = (await gateway.client.get("/api/v1/openapi.json")).json()

    operations = {
        ("get", "/api/v1/subscriptions"): RpcQueue.SUBSCRIPTIONS_LIST,
        ("post", "/api/v1/subscriptions"): RpcQueue.SUBSCRIPTIONS_CREATE,
        ("get", "/api/v1/subscriptions/{subscription_id}"): RpcQueue.SUBSCRIPTIONS_GET,
        ("delete", "/api/v1/subscriptions/{subscription_id}"): RpcQueue.SUBSCRIPTIONS_DELETE,
    }
    for (method, path), queue in operations.items():
        operation = document["paths"][path][method]
        assert operation["x-required-permission"] == "system:configure", (method, path)
        assert operation["tags"] == ["subscriptions"], (method, path)
        assert "501" not in operation["responses"], (method, path)
        assert ROUTE_OPERATIONS[f"{method.upper()} {path}"] == [queue]
    assert "201" in document["paths"]["/api/v1/subscriptions"]["post"]["responses"]
    assert (
        "204" in document["paths"]["/api/v1/subscriptions/{subscription_id}"]["delete"]["responses"]
    )
    body = document["components"]["schemas"]["SubscriptionBody"]
    assert body["additionalProperties"] is False
    assert body["properties"]["description"]["maxLength"] == 500
