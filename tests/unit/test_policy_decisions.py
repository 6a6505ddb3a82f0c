"""Policy: decisions over the role matrix of docs/contracts.md, role assignment, the first admin."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_policy.adapters.outbound.memory import InMemoryRoleStore
from hypersdk_policy.core.service import PolicyService

# docs/contracts.md, "Roles and permissions (exactly this matrix)", copied by hand.
MATRIX: dict[str, dict[str, bool]] = {
    "vms:browse": {"admin": True, "operator": True, "viewer": True, "auditor": True},
    "jobs:view": {"admin": True, "operator": True, "viewer": True, "auditor": True},
    "vms:export": {"admin": True, "operator": True, "viewer": False, "auditor": False},
    "jobs:cancel": {"admin": True, "operator": True, "viewer": False, "auditor": False},
    "providers:configure": {"admin": True, "operator": True, "viewer": False, "auditor": False},
    "users:manage": {"admin": True, "operator": False, "viewer": False, "auditor": False},
    "apikeys:manage": {"admin": True, "operator": False, "viewer": False, "auditor": False},
    "audit:view": {"admin": True, "operator": False, "viewer": False, "auditor": True},
    "secrets:manage": {"admin": True, "operator": False, "viewer": False, "auditor": False},
    "system:configure": {"admin": True, "operator": False, "viewer": False, "auditor": False},
}
ROLES = ("admin", "operator", "viewer", "auditor")
CONTEXT = RequestContext(actor="dave", source_ip="192.0.2.10", request_id="req-77")
CASES = [
    pytest.param(role, permission, allowed, id=f"{role}-{permission}")
    for permission, row in MATRIX.items()
    for role, allowed in row.items()
]


@dataclass
class World:
    service: PolicyService
    roles: InMemoryRoleStore
    events: InMemoryUnitOfWork


@pytest.fixture
def world() -> World:
    roles = InMemoryRoleStore()
    events = InMemoryUnitOfWork(service="policy", stores=(roles,))
    return World(PolicyService(roles=roles, uow=events), roles, events)


def test_the_matrix_copy_covers_four_roles_and_ten_permissions() -> None:
    assert len(CASES) == 40
    assert all(set(row) == set(ROLES) for row in MATRIX.values())


@pytest.mark.parametrize(("role", "permission", "allowed"), CASES)
async def test_decide_follows_the_matrix(
    world: World, role: str, permission: str, allowed: bool
) -> None:
    await world.service.assign_roles(username="dave", roles=[role], context=CONTEXT)
    world.events.events.clear()

    decision = await world.service.decide(
        username="dave", permission=permission, resource="GET /api/v1/x", context=CONTEXT
    )

    assert decision.allowed is allowed
    assert decision.roles == [role]
    assert world.events.types() == ([] if allowed else ["policy.authorization.denied"])


@pytest.mark.parametrize("permission", list(MATRIX))
async def test_user_without_roles_is_denied_everything(world: World, permission: str) -> None:
    decision = await world.service.decide(
        username="nobody", permission=permission, resource="GET /api/v1/x", context=CONTEXT
    )

    assert not decision.allowed
    assert decision.roles == []


async def test_roles_add_up(world: World) -> None:
    await world.service.assign_roles(username="dave", roles=["viewer", "auditor"], context=CONTEXT)

    audit = await world.service.decide(
        username="dave", permission="audit:view", resource="r", context=CONTEXT
    )
    export = await world.service.decide(
        username="dave", permission="vms:export", resource="r", context=CONTEXT
    )

    assert audit.allowed
    assert not export.allowed
    assert audit.roles == ["auditor", "viewer"]


async def test_denial_is_published_with_principal_permission_resource_and_context(
    world: World,
) -> None:
    await world.service.assign_roles(username="dave", roles=["viewer"], context=CONTEXT)
    world.events.events.clear()

    decision = await world.service.decide(
        username="dave",
        permission="vms:export",
        resource="POST /api/v1/exports",
        context=CONTEXT,
    )

    assert not decision.allowed
    (denied,) = world.events.events
    assert denied.routing_key == "policy.authorization.denied"
    assert denied.type == "io.hypersdk.policy.authorization.denied"
    assert denied.data == {
        "principal": "dave",
        "permission": "vms:export",
        "resource": "POST /api/v1/exports",
    }
    assert denied.subject == "POST /api/v1/exports"
    assert denied.actor == "dave"
    assert denied.source_ip == "192.0.2.10"
    assert denied.request_id == "req-77"


async def test_role_assignment_replaces_the_old_roles(world: World) -> None:
    await world.service.assign_roles(username="dave", roles=["admin"], context=CONTEXT)
    assigned = await world.service.assign_roles(
        username="dave", roles=["viewer", "viewer"], context=CONTEXT
    )

    assert assigned == ["viewer"]
    assert await world.service.roles_of("dave") == ["viewer"]
    decision = await world.service.decide(
        username="dave", permission="users:manage", resource="r", context=CONTEXT
    )
    assert not decision.allowed
    last = [e for e in world.events.events if e.routing_key == "policy.role.assigned"][-1]
    assert last.data == {"username": "dave", "roles": ["viewer"], "generation": None}
    assert last.actor == "dave"


async def test_roles_whose_events_cannot_commit_stay_as_they_were(world: World) -> None:
    await world.service.assign_roles(username="erin", roles=["admin"], context=CONTEXT)
    before = list(world.events.events)
    world.events.fail_commits = {"policy.role.removed"}

    with pytest.raises(InMemoryUnitOfWork.CommitFailedError):
        await world.service.assign_roles(username="erin", roles=["viewer"], context=CONTEXT)

    assert await world.service.roles_of("erin") == ["admin"]
    assert world.events.events == before


async def test_losing_roles_is_published_as_role_removed(world: World) -> None:
    await world.service.assign_roles(username="erin", roles=["admin", "auditor"], context=CONTEXT)
    assert world.events.types().count("policy.role.removed") == 0

    await world.service.assign_roles(username="erin", roles=["auditor"], context=CONTEXT)

    removed = [e for e in world.events.events if e.routing_key == "policy.role.removed"]
    assert [e.data for e in removed] == [{"username": "erin", "roles": ["admin"]}]


async def test_external_roles_count_and_api_key_scopes_narrow(world: World) -> None:
    decide = world.service.decide
    external = await decide(
        username="pam-user",
        permission="vms:export",
        resource="r",
        context=CONTEXT,
        external_roles=["operator", "not-a-role"],
    )
    assert external.allowed
    assert external.roles == ["operator"]
    scoped = await decide(
        username="pam-user",
        permission="vms:export",
        resource="r",
        context=CONTEXT,
        external_roles=["operator"],
        scopes=["vms:browse"],
    )
    assert not scoped.allowed
    assert await world.service.permissions_of("pam-user", ["auditor"]) == [
        "audit:view",
        "jobs:view",
        "vms:browse",
    ]


@pytest.mark.parametrize("roles", [["superuser"], ["viewer", "root"], ["Admin"], [""]])
async def test_unknown_role_is_refused(world: World, roles: list[str]) -> None:
    await world.service.assign_roles(username="dave", roles=["viewer"], context=CONTEXT)
    count = len(world.events.events)

    with pytest.raises(ServiceError) as error:
        await world.service.assign_roles(username="dave", roles=roles, context=CONTEXT)

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert await world.service.roles_of("dave") == ["viewer"]
    assert len(world.events.events) == count


@pytest.mark.parametrize("permission", ["vms:delete", "VMS:BROWSE", "", "admin", "vms:*"])
async def test_unknown_permission_is_refused(world: World, permission: str) -> None:
    await world.service.assign_roles(username="dave", roles=["admin"], context=CONTEXT)
    count = len(world.events.events)

    with pytest.raises(ServiceError) as error:
        await world.service.decide(
            username="dave", permission=permission, resource="r", context=CONTEXT
        )

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert len(world.events.events) == count


async def test_bootstrap_admin_is_assigned_once(world: World) -> None:
    assert await world.service.ensure_bootstrap_admin("root")
    assert not await world.service.ensure_bootstrap_admin("root")
    assert not await world.service.ensure_bootstrap_admin("intruder")

    assert await world.service.roles_of("root") == ["admin"]
    assert await world.service.roles_of("intruder") == []
    assert world.events.types() == ["policy.role.assigned"]
    assert world.events.events[0].data == {
        "username": "root",
        "roles": ["admin"],
        "generation": None,  # by name only: policy knows no account of it
    }
    # No API request caused it: no actor, which only a request seal could back.
    assert world.events.events[0].actor is None


async def test_no_bootstrap_admin_when_an_admin_exists(world: World) -> None:
    await world.service.assign_roles(username="erin", roles=["admin"], context=CONTEXT)

    assert not await world.service.ensure_bootstrap_admin("root")
    assert await world.service.roles_of("root") == []
