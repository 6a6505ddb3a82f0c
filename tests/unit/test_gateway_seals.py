"""The gateway seals each request it forwards, and asks for grants naming a route's operations."""

from __future__ import annotations

from fastapi.routing import APIRoute

from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.operations import EXPORT_COMMAND
from hypersdk_contracts.rpc import DecideRequest
from hypersdk_gateway.adapters.inbound.http import PERMISSION_EXTENSION, build_api
from hypersdk_gateway.adapters.inbound.operations import ROUTE_OPERATIONS
from hypersdk_gateway.core.credentials import CredentialCache
from hypersdk_kit.guard import SEAL_TYPE
from tests.unit.fake_backend import InProcessBackend, seal_verifier
from tests.unit.test_gateway_chain import EXPORT_BODY, Gateway, bearer


async def _never_ready() -> bool:
    return False


def test_every_route_with_a_permission_declares_its_operations_and_no_other_route_does() -> None:
    api = build_api(InProcessBackend({}), cache=CredentialCache(ttl_seconds=0), ready=_never_ready)
    guarded = {
        f"{method} {route.path}"
        for route in api.routes
        if isinstance(route, APIRoute) and PERMISSION_EXTENSION in (route.openapi_extra or {})
        for method in route.methods
    }

    assert guarded == set(ROUTE_OPERATIONS)


async def test_each_forwarded_request_is_sealed_for_its_queue_request_and_target(
    gateway: Gateway,
) -> None:
    token = await gateway.login("olga")

    response = await gateway.client.post("/api/v1/exports", json=EXPORT_BODY, headers=bearer(token))

    assert response.status_code == 202, response.text
    asked = dict(gateway.backend.requests[-2:])  # the decision, then the export
    decide = asked[RpcQueue.POLICY_DECIDE]
    assert isinstance(decide, DecideRequest)
    assert decide.operations == sorted(
        [RpcQueue.EXPORTER_CREATE_EXPORT, EXPORT_COMMAND, RpcQueue.SECRETS_RESOLVE_CREDENTIAL]
    )
    seals = {
        queue: seal_verifier().verify(request.context.seal) for queue, request in asked.items()
    }
    export = seals[RpcQueue.EXPORTER_CREATE_EXPORT]
    assert {name: export[name] for name in ("typ", "rid", "ip", "sub", "op", "res")} == {
        "typ": SEAL_TYPE,
        "rid": response.headers["X-Request-ID"],
        "ip": "127.0.0.1",
        "sub": "olga",
        "op": RpcQueue.EXPORTER_CREATE_EXPORT,
        "res": "lab/web-1",
    }
    assert seals[RpcQueue.POLICY_DECIDE]["op"] == RpcQueue.POLICY_DECIDE
    assert seals[RpcQueue.POLICY_DECIDE]["jti"] != seals[RpcQueue.EXPORTER_CREATE_EXPORT]["jti"]


async def test_a_cached_grant_serves_its_own_route_only(gateway: Gateway) -> None:
    token = await gateway.login("olga")
    for _ in range(2):
        assert (await gateway.client.get("/api/v1/jobs", headers=bearer(token))).status_code == 200
    assert (await gateway.client.get("/api/v1/vms", headers=bearer(token))).status_code == 200

    decisions = [
        request
        for queue, request in gateway.backend.requests
        if queue == RpcQueue.POLICY_DECIDE and isinstance(request, DecideRequest)
    ]
    # Two routes, two grants: the second GET /jobs reused the first one's.
    assert [d.operations for d in decisions] == [
        [RpcQueue.EXPORTER_LIST_JOBS],
        [RpcQueue.EXPORTER_LIST_VMS, RpcQueue.SECRETS_RESOLVE_CREDENTIAL],
    ]
