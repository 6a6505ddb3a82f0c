"""Gateway: the user workflows that span identity and policy (core/users.py).

In-memory fakes of the two ports, with a failure injected between the steps: each partial
failure leaves a safe state, and repeating the call converges.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from hypersdk_contracts.envelope import CloudEvent, RequestContext, new_event
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import UserDeleted
from hypersdk_contracts.names import RoutingKey
from hypersdk_contracts.rpc import UserView
from hypersdk_gateway.core.users import UserAdministration
from hypersdk_gateway.ports.outbound import RoleAssignments, UserAccounts
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_policy.adapters.inbound import bus as policy_bus
from hypersdk_policy.adapters.outbound.memory import InMemoryRoleStore
from hypersdk_policy.core.service import PolicyService

ADMIN = RequestContext(actor="admin", request_id="req-users")


def _unavailable() -> ServiceError:
    return ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, "A backing service did not answer.")


class Faults:
    """Failures to inject, once each, by step name; ``after`` ones fail once the step is done."""

    def __init__(self) -> None:
        self.before: dict[str, ServiceError] = {}
        self.after: dict[str, ServiceError] = {}

    def check(self, step: str) -> None:
        if step in self.before:
            raise self.before.pop(step)

    def done(self, step: str) -> None:
        if step in self.after:
            raise self.after.pop(step)


class InMemoryUserAccounts(UserAccounts):
    """Identity's accounts in a dict; sessions counted per user."""

    def __init__(self, faults: Faults) -> None:
        self.users: dict[str, UserView] = {}
        self.sessions: dict[str, int] = {}
        self.generations: dict[str, int] = {}  # the last one of each name, kept after deletion
        self.faults = faults

    def _existing(self, username: str) -> UserView:
        if username not in self.users:
            raise ServiceError(ErrorCode.NOT_FOUND, "No user of that name.")
        return self.users[username]

    async def create(
        self,
        *,
        username: str,
        password: str | None,
        source: Literal["local", "pam"],
        context: RequestContext,
    ) -> UserView:
        self.faults.check("create")
        if username in self.users:
            raise ServiceError(ErrorCode.CONFLICT, "A user with that name exists.")
        self.generations[username] = self.generations.get(username, 0) + 1
        self.users[username] = UserView(
            username=username,
            generation=self.generations[username],
            source=source,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        self.sessions[username] = 0
        return self.users[username]

    async def get(self, username: str, context: RequestContext) -> UserView:
        return self._existing(username)

    async def set_disabled(
        self, username: str, *, disabled: bool, context: RequestContext
    ) -> UserView:
        self.faults.check("set_disabled")
        user = self._existing(username).model_copy(update={"disabled": disabled})
        self.users[username] = user
        if disabled:
            self.sessions[username] = 0
        return user

    async def delete(self, username: str, context: RequestContext) -> UserView:
        self.faults.check("delete")
        self._existing(username)
        del self.sessions[username]
        return self.users.pop(username)

    async def end_sessions(self, username: str, context: RequestContext) -> None:
        self.faults.check("end_sessions")
        self._existing(username)
        self.sessions[username] = 0


class InMemoryRoleAssignments(RoleAssignments):
    """Policy's assignments in a dict (any user name, as policy keeps them).

    ``accounts`` records the generation each name's roles were last given to (None: by name).
    """

    def __init__(self, faults: Faults) -> None:
        self.assignments: dict[str, list[str]] = {}
        self.accounts: dict[str, int | None] = {}
        self.faults = faults

    async def roles_of(self, username: str, context: RequestContext) -> list[str]:
        return sorted(self.assignments.get(username, []))

    async def assign(
        self,
        username: str,
        roles: list[str],
        context: RequestContext,
        *,
        generation: int | None,
    ) -> list[str]:
        self.faults.check("assign")
        self.accounts[username] = generation
        if roles:
            self.assignments[username] = sorted(roles)
        else:
            self.assignments.pop(username, None)
        self.faults.done("assign")  # stored, then the answer was lost
        return sorted(roles)


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def accounts(faults: Faults) -> InMemoryUserAccounts:
    return InMemoryUserAccounts(faults)


@pytest.fixture
def roles(faults: Faults) -> InMemoryRoleAssignments:
    return InMemoryRoleAssignments(faults)


@pytest.fixture
def users(accounts: InMemoryUserAccounts, roles: InMemoryRoleAssignments) -> UserAdministration:
    return UserAdministration(accounts=accounts, roles=roles)


async def _create(users: UserAdministration, name: str = "vera", *role: str) -> None:
    await users.create(
        username=name,
        password="a long enough password",
        source="local",
        roles=list(role or ("viewer",)),
        context=ADMIN,
    )


# ---- create -------------------------------------------------------------------------------


async def test_create_makes_the_account_then_assigns_its_roles(
    users: UserAdministration, roles: InMemoryRoleAssignments
) -> None:
    created = await users.create(
        username="vera",
        password="a long enough password",
        source="local",
        roles=["viewer", "auditor", "viewer"],
        context=ADMIN,
    )

    assert created.user.username == "vera"
    assert created.roles == ["auditor", "viewer"]
    assert roles.assignments == {"vera": ["auditor", "viewer"]}


async def test_unknown_roles_are_refused_before_anything_changes(
    users: UserAdministration, accounts: InMemoryUserAccounts, roles: InMemoryRoleAssignments
) -> None:
    with pytest.raises(ServiceError) as error:
        await _create(users, "vera", "viewer", "superuser")

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert "superuser" in error.value.message
    assert accounts.users == {}
    assert roles.assignments == {}


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_create_whose_roles_fail_leaves_no_account_and_a_retry_converges(
    users: UserAdministration,
    accounts: InMemoryUserAccounts,
    roles: InMemoryRoleAssignments,
    faults: Faults,
    when: str,
) -> None:
    getattr(faults, when)["assign"] = _unavailable()

    with pytest.raises(ServiceError) as error:
        await _create(users, "vera", "admin")

    assert error.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert accounts.users == {}
    # Roles stored before the answer was lost stay with a name no account has: policy removes
    # them on the identity.user.deleted the undo published (tests/integration/...).
    await _create(users, "vera", "viewer")
    assert set(accounts.users) == {"vera"}
    assert roles.assignments == {"vera": ["viewer"]}


async def test_when_the_undo_fails_too_the_account_is_left_without_roles(
    users: UserAdministration,
    accounts: InMemoryUserAccounts,
    roles: InMemoryRoleAssignments,
    faults: Faults,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults.before["assign"] = _unavailable()
    faults.before["delete"] = _unavailable()

    with pytest.raises(ServiceError) as error:
        await _create(users, "vera", "admin")

    assert error.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert set(accounts.users) == {"vera"}
    assert roles.assignments == {}  # least privilege: an account that can do nothing
    assert "user workflow step failed: delete" in caplog.text
    assert "a long enough password" not in caplog.text


# ---- update -------------------------------------------------------------------------------


async def test_a_role_change_stores_the_roles_and_ends_the_sessions(
    users: UserAdministration, accounts: InMemoryUserAccounts, roles: InMemoryRoleAssignments
) -> None:
    await _create(users)
    accounts.sessions["vera"] = 2

    updated = await users.update("vera", roles=["operator"], disabled=None, context=ADMIN)

    assert updated.roles == ["operator"]
    assert roles.assignments == {"vera": ["operator"]}
    assert accounts.sessions["vera"] == 0


@pytest.mark.parametrize("fault", [("end_sessions", "before"), ("assign", "after")])
async def test_a_role_change_happens_with_its_session_ending_or_not_at_all(
    users: UserAdministration,
    accounts: InMemoryUserAccounts,
    roles: InMemoryRoleAssignments,
    faults: Faults,
    fault: tuple[str, str],
) -> None:
    await _create(users)
    accounts.sessions["vera"] = 2
    step, when = fault
    getattr(faults, when)[step] = _unavailable()

    with pytest.raises(ServiceError) as error:
        await users.update("vera", roles=["admin"], disabled=None, context=ADMIN)

    assert error.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert roles.assignments == {"vera": ["viewer"]}  # the previous roles, put back
    assert accounts.sessions["vera"] == 2
    retried = await users.update("vera", roles=["admin"], disabled=None, context=ADMIN)
    assert retried.roles == ["admin"]
    assert roles.assignments == {"vera": ["admin"]}
    assert accounts.sessions["vera"] == 0


async def test_disabling_alone_touches_identity_only(
    users: UserAdministration, accounts: InMemoryUserAccounts, faults: Faults
) -> None:
    await _create(users)
    faults.before["assign"] = _unavailable()  # policy would fail if it were asked to change

    updated = await users.update("vera", roles=None, disabled=True, context=ADMIN)

    assert updated.user.disabled
    assert updated.roles == ["viewer"]
    assert accounts.users["vera"].disabled


@pytest.mark.parametrize(("roles_", "disabled"), [(None, None), (["wizard"], True)])
async def test_update_refusals_change_nothing(
    users: UserAdministration,
    accounts: InMemoryUserAccounts,
    roles_: list[str] | None,
    disabled: bool | None,
) -> None:
    await _create(users)

    with pytest.raises(ServiceError) as error:
        await users.update("vera", roles=roles_, disabled=disabled, context=ADMIN)

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert not accounts.users["vera"].disabled


async def test_updating_an_unknown_user_is_not_found_and_assigns_nothing(
    users: UserAdministration, roles: InMemoryRoleAssignments
) -> None:
    with pytest.raises(ServiceError) as error:
        await users.update("ghost", roles=["admin"], disabled=None, context=ADMIN)

    assert error.value.code is ErrorCode.NOT_FOUND
    assert roles.assignments == {}


# ---- delete -------------------------------------------------------------------------------


async def test_delete_removes_the_account_then_its_roles(
    users: UserAdministration, accounts: InMemoryUserAccounts, roles: InMemoryRoleAssignments
) -> None:
    await _create(users, "vera", "admin")

    await users.delete("vera", ADMIN)

    assert accounts.users == {}
    assert roles.assignments == {}


async def test_a_delete_whose_second_step_fails_still_converges(
    users: UserAdministration,
    accounts: InMemoryUserAccounts,
    roles: InMemoryRoleAssignments,
    faults: Faults,
) -> None:
    await _create(users, "vera", "admin")
    faults.before["assign"] = _unavailable()

    await users.delete("vera", ADMIN)  # the account is gone: the deletion stands

    assert accounts.users == {}
    assert roles.assignments == {"vera": ["admin"]}  # until policy handles user.deleted...
    with pytest.raises(ServiceError) as again:
        await users.delete("vera", ADMIN)
    assert again.value.code is ErrorCode.NOT_FOUND
    assert roles.assignments == {}  # ...or a repeated DELETE clears them


async def test_a_delete_refused_by_identity_keeps_the_roles(
    users: UserAdministration,
    accounts: InMemoryUserAccounts,
    roles: InMemoryRoleAssignments,
    faults: Faults,
) -> None:
    await _create(users, "vera", "admin")
    faults.before["delete"] = ServiceError(ErrorCode.CONFLICT, "You cannot delete yourself.")

    with pytest.raises(ServiceError) as error:
        await users.delete("vera", ADMIN)

    assert error.value.code is ErrorCode.CONFLICT
    assert set(accounts.users) == {"vera"}
    assert roles.assignments == {"vera": ["admin"]}


# ---- accounts of one name (decision 0041) ---------------------------------------------------


async def test_every_step_names_the_account_it_is_for(
    users: UserAdministration,
    accounts: InMemoryUserAccounts,
    roles: InMemoryRoleAssignments,
    faults: Faults,
) -> None:
    await _create(users, "vera", "admin")
    assert roles.accounts == {"vera": 1}
    await users.delete("vera", ADMIN)
    assert roles.accounts == {"vera": 1}  # the deleted account's roles cleared, not the name's
    await _create(users, "vera", "viewer")
    assert roles.accounts == {"vera": 2}
    faults.before["end_sessions"] = _unavailable()
    with pytest.raises(ServiceError):
        await users.update("vera", roles=["operator"], disabled=None, context=ADMIN)
    assert (roles.assignments, roles.accounts) == ({"vera": ["viewer"]}, {"vera": 2})
    faults.before["assign"] = _unavailable()
    await users.delete("vera", ADMIN)
    with pytest.raises(ServiceError):
        await users.delete("vera", ADMIN)  # which account it was is not known any more
    assert roles.accounts == {"vera": None}


class PolicyRoles(RoleAssignments):
    """The port over policy's own core and in-memory store, as its RPC answers would."""

    def __init__(self, policy: PolicyService, faults: Faults) -> None:
        self.policy = policy
        self.faults = faults

    async def roles_of(self, username: str, context: RequestContext) -> list[str]:
        return await self.policy.roles_of(username)

    async def assign(
        self,
        username: str,
        roles: list[str],
        context: RequestContext,
        *,
        generation: int | None,
    ) -> list[str]:
        self.faults.check("assign")
        return await self.policy.assign_roles(
            username=username, roles=roles, generation=generation, context=context
        )


def _deletions_subscriber(
    policy: PolicyService, monkeypatch: pytest.MonkeyPatch
) -> Callable[[CloudEvent], Awaitable[None]]:
    """Policy's ``policy.user-deletions`` handler, as its bus adapter registers it."""
    handlers: list[Callable[[CloudEvent], Awaitable[None]]] = []
    monkeypatch.setattr(
        policy_bus, "subscribe_envelopes", lambda _b, _q, handler, **_: handlers.append(handler)
    )
    policy_bus.register_subscribers(None, policy, declare_topology=False)  # type: ignore[arg-type]
    return handlers[0]


@pytest.mark.parametrize("skew", [timedelta(days=1), -timedelta(days=1)], ids=["ahead", "behind"])
async def test_a_deletion_reaches_policy_late_with_a_skewed_time_and_still_converges(
    accounts: InMemoryUserAccounts,
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
    skew: timedelta,
) -> None:
    policy = PolicyService(roles=InMemoryRoleStore(), uow=InMemoryUnitOfWork(service="policy"))
    user_deleted = _deletions_subscriber(policy, monkeypatch)
    users = UserAdministration(accounts=accounts, roles=PolicyRoles(policy, faults))
    await _create(users, "vera", "admin")
    await _create(users, "olga", "admin")
    faults.before["assign"] = _unavailable()
    await users.delete("vera", ADMIN)  # the gateway's clear fails: policy's reaction remains
    assert await policy.roles_of("vera") == ["admin"]
    await _create(users, "vera", "viewer")  # a new vera, before the deletion event arrives
    faults.before["assign"] = _unavailable()
    await users.delete("olga", ADMIN)  # olga's deletion arrives before anyone takes the name

    # identity.user.deleted as identity published them, timed by identity's skewed clock.
    for name in ("vera", "olga"):
        event = new_event(
            service="identity",
            routing_key=RoutingKey.USER_DELETED,
            data=UserDeleted(username=name, generation=1, sessions_revoked=0, api_keys_revoked=0),
            subject=f"user/{name}",
            context=ADMIN,
        )
        await user_deleted(event.model_copy(update={"time": datetime.now(UTC) + skew}))

    assert await policy.roles_of("vera") == ["viewer"]  # the new account keeps its roles
    assert await policy.roles_of("olga") == []  # the deleted account's are gone
    await _create(users, "olga", "auditor")  # and olga 2 gets only her own
    assert await policy.roles_of("olga") == ["auditor"]
