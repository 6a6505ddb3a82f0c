"""A deleted user's role assignments go even if the gateway's second call never happens.

The user is deleted through identity alone (``identity.rpc.delete_user``, with a grant obtained
as the gateway obtains one), so nothing asks policy to clear the roles: policy removes them
itself when ``identity.user.deleted`` reaches its own durable queue (decision 0026).

Which roles are the deleted account's is decided by identity's account generations, never by
comparing the event's time with policy's clock (decision 0041): a deletion event timed by an
identity whose clock is a day ahead keeps the roles of the account created again under the
name, and one timed a day behind still removes the deleted account's.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.envelope import RequestContext, new_event
from hypersdk_contracts.events import UserDeleted
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


def _assigned(stack: Stack, username: str) -> list[tuple[str, int | None]]:
    rows = stack.db(
        "SELECT role, generation FROM policy.role_assignments WHERE username = $1 ORDER BY role",
        username,
    )
    return [(row["role"], row["generation"]) for row in rows]


def _create(stack: Stack, admin: str, name: str, *roles: str) -> int:
    """Create a local user through the API; the account's generation."""
    status, body, _ = stack.api.call(
        "POST",
        "/api/v1/users",
        {"username": name, "password": f"skew-{secrets.token_hex(8)}", "roles": list(roles)},
        token=admin,
    )
    assert status == 201, body
    assert body["roles"] == sorted(roles)
    return int(body["user"]["generation"])


async def _deleted_by_a_skewed_identity(
    stack: Stack, name: str, generation: int, skew: timedelta
) -> None:
    """``identity.user.deleted`` as identity publishes it, timed by a clock ``skew`` off."""
    event = new_event(
        service="identity",
        routing_key="identity.user.deleted",
        data=UserDeleted(
            username=name, generation=generation, sessions_revoked=0, api_keys_revoked=0
        ),
        subject=f"user/{name}",
        context=None,
    ).model_copy(update={"time": datetime.now(UTC) + skew})
    assert stack.identity_login is not None
    await stack.identity_login.publish(
        event.model_dump_json(by_alias=True, exclude_none=True).encode(),
        routing_key=event.routing_key,
        message_id=event.id,
    )


async def test_the_deleted_accounts_roles_go_and_a_new_accounts_stay_whatever_the_clocks(
    stack: Stack,
) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    again, gone = f"again-{secrets.token_hex(3)}", f"gone-{secrets.token_hex(3)}"

    # Deleted and created again with other roles: the new account is told apart from the old.
    first = _create(stack, admin, again, "admin")
    assert api.call("DELETE", f"/api/v1/users/{again}", token=admin)[0] == 204
    assert await until(lambda: _roles(stack, again) == [], seconds=15)
    second = _create(stack, admin, again, "viewer")
    assert second == first + 1
    assert _assigned(stack, again) == [("viewer", second)]

    # An account deleted without its own event reaching policy yet (its row removed behind
    # identity's back stands in for an event still on its way).
    old = _create(stack, admin, gone, "admin", "auditor")
    stack.db("DELETE FROM identity.users WHERE username = $1", gone)

    # The old account's deletion again, timed a day ahead of policy's clock (before, policy
    # removed every role assigned "before" that time: the new account's too); then the other
    # account's, timed a day behind (before, its roles looked newer than the deletion and
    # survived into the next account of the name).
    await _deleted_by_a_skewed_identity(stack, again, first, timedelta(days=1))
    await _deleted_by_a_skewed_identity(stack, gone, old, -timedelta(days=1))

    assert await until(lambda: _roles(stack, gone) == [], seconds=15), _roles(stack, gone)
    await asyncio.sleep(0.5)  # the earlier event on the same queue has long been handled
    assert _assigned(stack, again) == [("viewer", second)]
    status, body, _ = api.call("GET", f"/api/v1/users/{again}", token=admin)
    assert status == 200, body
    assert (body["user"]["generation"], body["roles"]) == (second, ["viewer"])

    # The next account of the freed name inherits nothing, and gets a newer generation.
    assert _create(stack, admin, gone) == old + 1
    assert _roles(stack, gone) == []


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
