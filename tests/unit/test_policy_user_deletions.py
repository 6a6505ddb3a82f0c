"""Policy reacts to ``identity.user.deleted``: the deleted user's roles go, once (decision 0026).

Idempotent on redelivery, and blind to roles assigned after the deletion (a new user of the
same name keeps theirs).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypersdk_contracts.envelope import RequestContext
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_policy.adapters.outbound.memory import InMemoryRoleStore
from hypersdk_policy.core.service import PolicyService

ADMIN = RequestContext(actor="admin", request_id="req-roles")
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> datetime:
        return self.now


async def _policy() -> tuple[PolicyService, InMemoryRoleStore, InMemoryUnitOfWork, Clock]:
    clock = Clock()
    roles = InMemoryRoleStore(clock=clock)
    events = InMemoryUnitOfWork(service="policy", stores=(roles,))
    policy = PolicyService(roles=roles, uow=events)
    await policy.assign_roles(username="vera", roles=["admin", "viewer"], context=ADMIN)
    await policy.assign_roles(username="olga", roles=["operator"], context=ADMIN)
    events.events.clear()
    return policy, roles, events, clock


async def test_a_deleted_users_roles_are_removed_once() -> None:
    policy, _, events, clock = await _policy()
    clock.now += timedelta(seconds=5)

    removed = await policy.user_deleted("vera", deleted_at=clock.now)
    redelivered = await policy.user_deleted("vera", deleted_at=clock.now)

    assert removed == ["admin", "viewer"]
    assert redelivered == []
    assert await policy.roles_of("vera") == []
    assert await policy.roles_of("olga") == ["operator"]
    assert [(e.routing_key, e.data) for e in events.events] == [
        ("policy.role.removed", {"username": "vera", "roles": ["admin", "viewer"]})
    ]
    assert events.events[0].actor is None  # policy's own reaction, not a caller's request


async def test_roles_assigned_after_the_deletion_belong_to_a_new_user_and_stay() -> None:
    policy, _, events, clock = await _policy()
    deleted_at = clock.now + timedelta(seconds=1)
    clock.now += timedelta(seconds=2)  # a new vera is created with a role after the deletion
    await policy.assign_roles(username="vera", roles=["viewer"], context=ADMIN)
    events.events.clear()

    removed = await policy.user_deleted("vera", deleted_at=deleted_at)  # a late delivery

    assert removed == []
    assert await policy.roles_of("vera") == ["viewer"]
    assert events.events == []


async def test_a_user_without_roles_is_a_no_op() -> None:
    policy, _, events, clock = await _policy()

    assert await policy.user_deleted("nobody", deleted_at=clock.now) == []
    assert events.events == []
