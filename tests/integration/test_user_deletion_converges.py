"""A deleted user's role assignments go even if the gateway's second call never happens.

The user is deleted through identity alone (``identity.rpc.delete_user``, with a grant obtained
as the gateway obtains one), so nothing asks policy to clear the roles: policy removes them
itself when ``identity.user.deleted`` reaches its own durable queue (decision 0026).
"""

from __future__ import annotations

import secrets

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import AuthenticateRequest, DecideRequest, UserNameRequest
from hypersdk_gateway.adapters.inbound.operations import operations_of
from hypersdk_gateway.core.seals import SEAL_ISSUER, seal_request
from hypersdk_kit.bus import RpcClient
from hypersdk_kit.trust import AssertionSigner, load_private_key

from .conftest import ADMIN_PASSWORD, Stack, until


def _roles(stack: Stack, username: str) -> list[str]:
    rows = stack.db(
        "SELECT role FROM policy.role_assignments WHERE username = $1 ORDER BY role", username
    )
    return [row["role"] for row in rows]


async def test_policy_removes_the_roles_of_a_user_deleted_through_identity_alone(
    stack: Stack, broker: RabbitBroker
) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    name = f"gone-{secrets.token_hex(3)}"
    status, body, _ = api.call(
        "POST",
        "/api/v1/users",
        {"username": name, "password": f"gone-{secrets.token_hex(8)}", "roles": ["admin"]},
        token=admin,
    )
    assert status == 201, body
    assert _roles(stack, name) == ["admin"]

    # What the gateway sends for DELETE /api/v1/users/{name}, made with the stack's gateway key,
    # except that the second step (policy clearing the roles) is never asked.
    gateway = AssertionSigner(
        load_private_key(stack.config.key_dir / "gateway.key"), issuer=SEAL_ISSUER
    )
    rpc = RpcClient(broker, timeout_seconds=10)
    request_id = f"delete-{secrets.token_hex(4)}"
    principal = await rpc.call(
        RpcQueue.IDENTITY_AUTHENTICATE,
        AuthenticateRequest(token=admin, context=RequestContext(request_id=request_id)),
    )
    asking = RequestContext(actor="admin", request_id=request_id, assertion=principal["assertion"])
    route = "DELETE /api/v1/users/{username}"
    decide = DecideRequest(
        username="admin",
        permission="users:manage",
        resource=route,
        operations=operations_of(route),
        context=asking,
    )
    decision = await rpc.call(
        RpcQueue.POLICY_DECIDE, seal_request(gateway, RpcQueue.POLICY_DECIDE, decide)
    )
    assert decision["allowed"], decision
    delete = UserNameRequest(
        username=name, context=asking.model_copy(update={"grant": decision["grant"]})
    )
    await rpc.call(
        RpcQueue.IDENTITY_DELETE_USER, seal_request(gateway, RpcQueue.IDENTITY_DELETE_USER, delete)
    )

    assert api.call("GET", f"/api/v1/users/{name}", token=admin)[0] == 404
    assert await until(lambda: _roles(stack, name) == [], seconds=15), _roles(stack, name)

    # The removal is audited as policy's own event about that user.
    def removal_audited() -> bool:
        return any(
            entry["action"] == "role.remove" and entry["resource"] == f"user/{name}"
            for entry in api.recent_audit(admin, last=200)
        )

    assert await until(removal_audited, seconds=15)
