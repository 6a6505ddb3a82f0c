"""Policy reacts to ``identity.user.deleted``: the deleted account's roles go, once (decisions
0026 and 0041).

Which assignments are the deleted account's is decided by identity's account generations
alone: an event whose time is a day ahead of policy's clock or a day behind it removes exactly
the deleted account's roles, and a new account of the same name keeps its own. Idempotent on
redelivery; roles by name only (the bootstrap admin, rows from before generations) go with the
first deletion of the name policy handles.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hypersdk_contracts.envelope import CloudEvent, RequestContext, new_event
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import UserDeleted
from hypersdk_contracts.names import RoutingKey, RpcQueue
from hypersdk_contracts.rpc import AssignRolesRequest, RoleList
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_policy.adapters.inbound import bus as policy_bus
from hypersdk_policy.adapters.inbound import rpc as policy_rpc
from hypersdk_policy.adapters.outbound.memory import InMemoryRoleStore
from hypersdk_policy.core.service import PolicyService

ADMIN = RequestContext(actor="admin", request_id="req-roles")
DAY = timedelta(days=1)

EventHandler = Callable[[CloudEvent], Awaitable[None]]


class World:
    """Policy with in-memory stores, and its ``policy.user-deletions`` subscriber."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.roles = InMemoryRoleStore()
        self.events = InMemoryUnitOfWork(service="policy", stores=(self.roles,))
        self.policy = PolicyService(roles=self.roles, uow=self.events)
        handlers: list[EventHandler] = []

        def subscribe(_broker: object, _queue: object, handler: EventHandler, **_: object) -> None:
            handlers.append(handler)

        monkeypatch.setattr(policy_bus, "subscribe_envelopes", subscribe)
        policy_bus.register_subscribers(
            None,  # type: ignore[arg-type]  # the subscriber is captured, never registered
            self.policy,
            declare_topology=False,
        )
        (self._handler,) = handlers

    async def assign(self, username: str, generation: int | None, *roles: str) -> list[str]:
        return await self.policy.assign_roles(
            username=username, roles=list(roles), generation=generation, context=ADMIN
        )

    async def deliver(self, username: str, generation: int | None, *, skew: timedelta) -> None:
        """``identity.user.deleted`` from an identity whose clock is ``skew`` off policy's."""
        event = new_event(
            service="identity",
            routing_key=RoutingKey.USER_DELETED,
            data=UserDeleted(
                username=username, generation=generation, sessions_revoked=0, api_keys_revoked=0
            ),
            subject=f"user/{username}",
            context=ADMIN,
        )
        await self._handler(event.model_copy(update={"time": datetime.now(UTC) + skew}))

    def published(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.routing_key, e.data) for e in self.events.events]


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> World:
    world = World(monkeypatch)
    await world.assign("vera", 1, "admin", "viewer")
    await world.assign("olga", 3, "operator")
    world.events.events.clear()
    return world


async def test_a_deleted_accounts_roles_are_removed_once(world: World) -> None:
    await world.deliver("vera", 1, skew=timedelta(0))
    await world.deliver("vera", 1, skew=timedelta(0))  # redelivered

    assert await world.policy.roles_of("vera") == []
    assert await world.policy.roles_of("olga") == ["operator"]
    assert world.published() == [
        ("policy.role.removed", {"username": "vera", "roles": ["admin", "viewer"]})
    ]
    assert world.events.events[0].actor is None  # policy's own reaction, not a caller's request


@pytest.mark.parametrize("skew", [DAY, -DAY, timedelta(0)], ids=["ahead", "behind", "in-step"])
async def test_a_late_deletion_keeps_the_roles_of_the_account_created_again(
    world: World, skew: timedelta
) -> None:
    # vera 1 is deleted; vera 2 is created with a role before policy sees the deletion.
    await world.assign("vera", 2, "viewer")
    world.events.events.clear()

    await world.deliver("vera", 1, skew=skew)

    assert await world.policy.roles_of("vera") == ["viewer"]
    assert world.published() == []


@pytest.mark.parametrize("skew", [DAY, -DAY, timedelta(0)], ids=["ahead", "behind", "in-step"])
async def test_a_deletion_removes_the_accounts_roles_whatever_its_time_says(
    world: World, skew: timedelta
) -> None:
    await world.deliver("vera", 1, skew=skew)

    assert await world.policy.roles_of("vera") == []
    # A PAM user provisioned under the name later gets no assignment: it inherits nothing.
    assert await world.policy.permissions_of("vera") == []
    assert world.published() == [
        ("policy.role.removed", {"username": "vera", "roles": ["admin", "viewer"]})
    ]


async def test_roles_for_a_deleted_account_arriving_late_are_refused(world: World) -> None:
    await world.deliver("vera", 1, skew=-DAY)
    world.events.events.clear()

    with pytest.raises(ServiceError) as late:
        await world.assign("vera", 1, "admin")  # e.g. a PATCH's restore, after the deletion
    cleared = await world.assign("vera", 1)  # the gateway's own clear after its DELETE

    assert late.value.code is ErrorCode.CONFLICT
    assert cleared == []
    assert await world.policy.roles_of("vera") == []
    assert world.published() == []
    assert await world.assign("vera", 2, "viewer") == ["viewer"]  # the next account's are kept


async def test_an_older_accounts_step_never_changes_a_newer_accounts_roles(world: World) -> None:
    await world.assign("vera", 2, "auditor")

    with pytest.raises(ServiceError) as older:
        await world.assign("vera", 1, "admin")
    assert older.value.code is ErrorCode.CONFLICT
    assert await world.assign("vera", 1) == []  # clearing account 1 leaves account 2 alone
    assert await world.policy.roles_of("vera") == ["auditor"]


async def test_deletions_out_of_order_remove_each_account_once(world: World) -> None:
    await world.assign("vera", 2, "auditor")
    world.events.events.clear()

    await world.deliver("vera", 2, skew=DAY)
    await world.deliver("vera", 1, skew=-DAY)  # the older deletion arrives last

    assert await world.policy.roles_of("vera") == []
    removed = {"username": "vera", "roles": ["auditor"]}
    assert world.published() == [("policy.role.removed", removed)]


async def test_roles_by_name_only_go_with_the_next_deletion_of_the_name_once(world: World) -> None:
    # The bootstrap admin is assigned by name: policy does not know identity's generations.
    assert await world.policy.ensure_bootstrap_admin("root") is False  # vera holds admin
    await world.assign("vera", None)  # clear vera by name
    assert await world.policy.ensure_bootstrap_admin("root") is True
    world.events.events.clear()

    await world.deliver("root", 1, skew=DAY)
    assert await world.policy.roles_of("root") == []
    # The bootstrap admin again, by name (a restart with nobody holding admin): a redelivered
    # deletion of the account that went already does not take it away.
    assert await world.policy.ensure_bootstrap_admin("root") is True
    await world.deliver("root", 1, skew=timedelta(0))
    assert await world.policy.roles_of("root") == ["admin"]
    assert world.published() == [
        ("policy.role.removed", {"username": "root", "roles": ["admin"]}),
        ("policy.role.assigned", {"username": "root", "roles": ["admin"], "generation": None}),
    ]


async def test_an_event_from_before_generations_removes_roles_by_name_only(world: World) -> None:
    await world.assign("vera", None)  # nobody holds admin
    assert await world.policy.ensure_bootstrap_admin("root") is True
    world.events.events.clear()

    await world.deliver("root", None, skew=-DAY)
    await world.deliver("olga", None, skew=DAY)

    assert await world.policy.roles_of("root") == []
    assert await world.policy.roles_of("olga") == ["operator"]  # given to account 3: kept


async def test_a_user_without_roles_is_a_no_op(world: World) -> None:
    await world.deliver("nobody", 4, skew=timedelta(0))

    assert world.published() == []


async def test_the_rpc_gives_roles_to_one_account_and_clears_by_name(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: dict[str, Callable[[Any], Awaitable[Any]]] = {}

    def serve(_broker: object, queue: str, _model: object, answer: Any, **_: object) -> None:
        answers[queue] = answer

    monkeypatch.setattr(policy_rpc, "serve_rpc", serve)
    policy_rpc.register_rpc(
        None,  # type: ignore[arg-type]  # the answers are captured, never registered
        world.policy,
        guard=None,  # type: ignore[arg-type]  # serve_rpc's authorizer checks grants, not shown
        signer=None,  # type: ignore[arg-type]
    )
    assign = answers[RpcQueue.POLICY_ASSIGN_ROLES]

    with pytest.raises(ServiceError) as by_name:
        await assign(AssignRolesRequest(username="vera", roles=["admin"], context=ADMIN))
    given = await assign(
        AssignRolesRequest(username="ivan", roles=["viewer"], generation=2, context=ADMIN)
    )
    cleared = await assign(AssignRolesRequest(username="vera", roles=[], context=ADMIN))

    assert by_name.value.code is ErrorCode.VALIDATION_FAILED
    assert given == RoleList(username="ivan", roles=["viewer"])
    assert cleared == RoleList(username="vera", roles=[])
    assert world.roles.assignments_by_user["ivan"] == {"viewer": 2}
    assert "vera" not in world.roles.assignments_by_user
