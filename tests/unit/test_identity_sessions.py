"""Identity: logins, sessions (expiry, refresh, listing, revocation, sweeping), users (create,
disable, delete, role changes), and the bcrypt hasher."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_identity.adapters.outbound.bcrypt_hasher import BcryptPasswordHasher
from hypersdk_identity.adapters.outbound.memory import (
    InMemorySessionStore,
    InMemoryUserStore,
    InsecureFastHasher,
)
from hypersdk_identity.core.service import TOUCH_INTERVAL_SECONDS, IdentityService, SessionPolicy
from hypersdk_kit.memory import InMemoryUnitOfWork

IDLE_SECONDS = 15 * 60
LIFETIME_SECONDS = 8 * 60 * 60
PASSWORD = "correct horse battery"
CONTEXT = RequestContext(source_ip="198.51.100.4", request_id="req-login-1")
ADMIN = RequestContext(actor="admin", request_id="req-admin-1")
TOKEN_PATTERN = re.compile(r"^hsdk_s_[A-Za-z0-9_-]{43,}$")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class World:
    service: IdentityService
    users: InMemoryUserStore
    sessions: InMemorySessionStore
    events: InMemoryUnitOfWork
    clock: Clock


@pytest.fixture
async def world() -> World:
    hasher = InsecureFastHasher()
    users = InMemoryUserStore()
    sessions = InMemorySessionStore()
    events = InMemoryUnitOfWork(service="identity", stores=(users, sessions))
    clock = Clock()
    service = IdentityService(
        users=users,
        sessions=sessions,
        hasher=hasher,
        uow=events,
        session_policy=SessionPolicy(idle_seconds=IDLE_SECONDS, lifetime_seconds=LIFETIME_SECONDS),
        dummy_hash=await hasher.hash("dummy password for timing"),
        clock=clock,
    )
    await service.create_user("alice", PASSWORD, RequestContext(actor="admin"))
    return World(service, users, sessions, events, clock)


def _events_json(events: InMemoryUnitOfWork) -> str:
    return "\n".join(event.model_dump_json(by_alias=True) for event in events.events)


def _traceback_locals(error: BaseException) -> Iterator[object]:
    tb = error.__traceback__
    while tb is not None:
        yield from tb.tb_frame.f_locals.values()
        tb = tb.tb_next


# ---- login ------------------------------------------------------------------------------------


async def test_login_returns_a_long_prefixed_url_safe_token(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)

    assert TOKEN_PATTERN.fullmatch(result.token)
    assert result.user.username == "alice"
    assert result.expires_at == world.clock.now + timedelta(seconds=LIFETIME_SECONDS)


async def test_tokens_differ_between_logins(world: World) -> None:
    first = await world.service.login("alice", PASSWORD, CONTEXT)
    second = await world.service.login("alice", PASSWORD, CONTEXT)

    assert first.token != second.token
    assert first.session_id != second.session_id


async def test_login_stores_only_the_hash_of_the_token(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)

    (session,) = world.sessions.sessions.values()
    assert session.id == result.session_id
    assert session.token_hash == hashlib.sha256(result.token.encode()).digest()
    secret_part = result.token.removeprefix("hsdk_s_")
    for value in dataclasses.asdict(session).values():
        assert value != result.token
        assert secret_part not in str(value)
        if isinstance(value, bytes):
            assert result.token.encode() not in value
    assert secret_part not in repr(world.sessions.sessions)


async def test_login_publishes_success_and_session_without_the_token(world: World) -> None:
    before = len(world.events.events)

    result = await world.service.login("alice", PASSWORD, CONTEXT)

    new = world.events.events[before:]
    assert [event.routing_key for event in new] == [
        "identity.login.succeeded",
        "identity.session.created",
    ]
    assert new[0].data == {"username": "alice", "method": "local"}
    assert new[1].data["session_id"] == result.session_id
    assert all(event.actor == "alice" for event in new)
    assert all(event.source_ip == "198.51.100.4" for event in new)
    assert all(event.request_id == "req-login-1" for event in new)
    everything = _events_json(world.events)
    assert result.token not in everything
    assert result.token.removeprefix("hsdk_s_") not in everything


async def test_wrong_password_and_unknown_user_fail_the_same_way(world: World) -> None:
    with pytest.raises(ServiceError) as wrong_password:
        await world.service.login("alice", "not the password at all", CONTEXT)
    with pytest.raises(ServiceError) as unknown_user:
        await world.service.login("nobody", PASSWORD, CONTEXT)

    assert wrong_password.value.code is ErrorCode.INVALID_CREDENTIALS
    assert (wrong_password.value.code, wrong_password.value.message) == (
        unknown_user.value.code,
        unknown_user.value.message,
    )
    assert str(wrong_password.value) == str(unknown_user.value)
    failed = [e for e in world.events.events if e.routing_key == "identity.login.failed"]
    assert [e.data for e in failed] == [
        {"username": "alice", "reason": "invalid_credentials"},
        {"username": "nobody", "reason": "invalid_credentials"},
    ]
    assert all(e.request_id == "req-login-1" for e in failed)
    assert not world.sessions.sessions


async def test_failed_logins_do_not_keep_earlier_passwords_alive(world: World) -> None:
    # A shared exception instance would grow its traceback with every raise and keep the
    # frames (and so the passwords) of every earlier failed login reachable.
    with pytest.raises(ServiceError) as first:
        await world.service.login("alice", "first wrong password", CONTEXT)
    with pytest.raises(ServiceError) as second:
        await world.service.login("nobody", "second wrong password", CONTEXT)

    assert first.value is not second.value
    reachable = [value for value in _traceback_locals(second.value) if isinstance(value, str)]
    assert "second wrong password" in reachable  # the walk does see the login frame's locals
    assert not [value for value in reachable if "first wrong" in value]


async def test_failed_login_error_names_no_password(world: World) -> None:
    with pytest.raises(ServiceError) as error:
        await world.service.login("alice", "a-guess-at-the-password", CONTEXT)
    assert "a-guess-at-the-password" not in error.value.message
    assert "a-guess-at-the-password" not in _events_json(world.events)


async def test_disabled_user_is_refused_with_the_generic_error(world: World) -> None:
    alice = world.users.users["alice"]
    world.users.users["alice"] = dataclasses.replace(alice, disabled=True)

    with pytest.raises(ServiceError) as error:
        await world.service.login("alice", PASSWORD, CONTEXT)

    assert error.value.code is ErrorCode.INVALID_CREDENTIALS
    assert world.events.events[-1].routing_key == "identity.login.failed"
    assert world.events.events[-1].data == {"username": "alice", "reason": "account_disabled"}
    assert not world.sessions.sessions


async def test_login_with_a_password_over_72_bytes_fails(world: World) -> None:
    with pytest.raises(ServiceError) as error:
        await world.service.login("alice", PASSWORD + "x" * 60, CONTEXT)
    assert error.value.code is ErrorCode.INVALID_CREDENTIALS


# ---- sessions ---------------------------------------------------------------------------------


async def test_authenticate_returns_the_principal(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)

    principal = await world.service.authenticate(result.token)

    assert principal.username == "alice"
    assert principal.session_id == result.session_id


@pytest.mark.parametrize(
    "token",
    ["", "hsdk_s_", "hsdk_s_" + "A" * 43, "not-a-token"],
)
async def test_authenticate_refuses_unknown_tokens(world: World, token: str) -> None:
    await world.service.login("alice", PASSWORD, CONTEXT)
    with pytest.raises(ServiceError) as error:
        await world.service.authenticate(token)
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_refused_tokens_are_not_kept_alive_by_later_errors(world: World) -> None:
    with pytest.raises(ServiceError) as first:
        await world.service.authenticate("hsdk_s_first-refused-token")
    with pytest.raises(ServiceError) as second:
        await world.service.authenticate("hsdk_s_second-refused-token")

    assert first.value is not second.value
    reachable = [value for value in _traceback_locals(second.value) if isinstance(value, str)]
    assert "hsdk_s_second-refused-token" in reachable
    assert not [value for value in reachable if "first-refused" in value]


async def test_session_expires_after_idle_time(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)

    world.clock.advance(IDLE_SECONDS - 1)
    await world.service.authenticate(result.token)
    world.clock.advance(IDLE_SECONDS - 1)  # activity above restarted the idle timer
    await world.service.authenticate(result.token)
    world.clock.advance(IDLE_SECONDS)

    with pytest.raises(ServiceError) as error:
        await world.service.authenticate(result.token)
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_activity_is_written_at_most_once_per_touch_interval(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)
    created = world.sessions.sessions[result.session_id].last_seen_at

    world.clock.advance(TOUCH_INTERVAL_SECONDS - 1)
    await world.service.authenticate(result.token)
    assert world.sessions.sessions[result.session_id].last_seen_at == created

    world.clock.advance(1)
    await world.service.authenticate(result.token)
    assert world.sessions.sessions[result.session_id].last_seen_at == world.clock.now


async def test_session_ends_at_its_absolute_lifetime_despite_activity(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)
    step = IDLE_SECONDS // 2
    while world.clock.now + timedelta(seconds=step) < result.expires_at:
        world.clock.advance(step)
        await world.service.authenticate(result.token)

    world.clock.now = result.expires_at - timedelta(seconds=1)
    await world.service.authenticate(result.token)
    world.clock.now = result.expires_at

    with pytest.raises(ServiceError) as error:
        await world.service.authenticate(result.token)
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_session_of_a_user_disabled_later_stops_working(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)
    world.users.users["alice"] = dataclasses.replace(world.users.users["alice"], disabled=True)

    with pytest.raises(ServiceError) as error:
        await world.service.authenticate(result.token)
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_logout_revokes_the_session(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)
    other = await world.service.login("alice", PASSWORD, CONTEXT)

    await world.service.logout(result.token, CONTEXT)

    assert world.sessions.sessions[result.session_id].revoked
    assert not world.sessions.sessions[other.session_id].revoked
    with pytest.raises(ServiceError) as error:
        await world.service.authenticate(result.token)
    assert error.value.code is ErrorCode.UNAUTHENTICATED
    assert (await world.service.authenticate(other.token)).session_id == other.session_id
    revoked = world.events.events[-1]
    assert revoked.routing_key == "identity.session.revoked"
    assert revoked.data == {
        "session_id": result.session_id,
        "username": "alice",
        "reason": "logout",
    }
    assert result.token not in _events_json(world.events)


async def test_logout_twice_is_refused(world: World) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)
    await world.service.logout(result.token, CONTEXT)
    count = len(world.events.events)

    with pytest.raises(ServiceError) as error:
        await world.service.logout(result.token, CONTEXT)

    assert error.value.code is ErrorCode.UNAUTHENTICATED
    assert len(world.events.events) == count


# ---- users ------------------------------------------------------------------------------------


async def test_create_user_stores_a_hash_and_publishes_no_password(world: World) -> None:
    password = "a fine long password"

    view = await world.service.create_user("bob", password, RequestContext(actor="alice"))

    assert view.username == "bob"
    assert view.source == "local"
    assert not view.disabled
    stored = world.users.users["bob"]
    assert stored.password_hash is not None
    assert password.encode() not in stored.password_hash
    created = world.events.events[-1]
    assert created.routing_key == "identity.user.created"
    assert created.data == {"username": "bob", "source": "local", "provisioned": False}
    assert created.actor == "alice"
    assert password not in _events_json(world.events)
    assert PASSWORD not in _events_json(world.events)
    assert (await world.service.login("bob", password, CONTEXT)).user.username == "bob"


@pytest.mark.parametrize(
    "password",
    [
        "",
        "short",
        "elevenchars",  # 11 characters
        "x" * 73,  # 73 bytes
        "é" * 37,  # 37 characters, 74 bytes of UTF-8
        "🔑" * 19,  # 19 characters, 76 bytes of UTF-8
    ],
)
async def test_create_user_refuses_passwords_outside_the_policy(
    world: World, password: str
) -> None:
    count = len(world.events.events)

    with pytest.raises(ServiceError) as error:
        await world.service.create_user("bob", password, CONTEXT)

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    if password:
        assert password not in error.value.message
    assert "bob" not in world.users.users
    assert len(world.events.events) == count


@pytest.mark.parametrize(
    "password",
    ["twelve chars", "x" * 72, "é" * 36],  # 12 characters; 72 bytes; 72 bytes of UTF-8
)
async def test_create_user_accepts_passwords_at_the_limits(world: World, password: str) -> None:
    await world.service.create_user("bob", password, CONTEXT)

    assert (await world.service.login("bob", password, CONTEXT)).user.username == "bob"


async def test_long_password_is_not_truncated_to_72_bytes(world: World) -> None:
    # A password refused for length must not create a user reachable by its first 72 bytes.
    with pytest.raises(ServiceError):
        await world.service.create_user("bob", "y" * 100, CONTEXT)
    with pytest.raises(ServiceError) as error:
        await world.service.login("bob", "y" * 72, CONTEXT)
    assert error.value.code is ErrorCode.INVALID_CREDENTIALS


async def test_duplicate_user_is_a_conflict(world: World) -> None:
    original = world.users.users["alice"]
    count = len(world.events.events)

    with pytest.raises(ServiceError) as error:
        await world.service.create_user("alice", "another long password", CONTEXT)

    assert error.value.code is ErrorCode.CONFLICT
    assert world.users.users["alice"] == original
    assert len(world.events.events) == count


async def test_ensure_user_creates_only_once(world: World) -> None:
    assert await world.service.ensure_user("carol", "carol's long password", CONTEXT)
    assert not await world.service.ensure_user("carol", "a different password", CONTEXT)
    assert [user.username for user in await world.service.list_users()] == ["alice", "carol"]


# ---- the real bcrypt hasher -------------------------------------------------------------------


async def test_bcrypt_hasher() -> None:
    hasher = BcryptPasswordHasher(cost=12)
    password = "x" * 72
    password_hash = await hasher.hash(password)

    assert password_hash.startswith(b"$2b$12$")
    assert password.encode() not in password_hash
    assert await hasher.check(password, password_hash)
    assert not await hasher.check("x" * 71, password_hash)
    assert not await hasher.check("y" * 72, password_hash)
    # bcrypt only reads 72 bytes; the adapter must not let a longer password match.
    assert not await hasher.check(password + "z", password_hash)


@pytest.mark.parametrize("cost", [4, 10, 11])
def test_bcrypt_hasher_refuses_a_cost_below_12(cost: int) -> None:
    with pytest.raises(ValueError, match="at least 12"):
        BcryptPasswordHasher(cost=cost)


# ---- refresh ----------------------------------------------------------------------------------


async def test_refresh_issues_a_new_token_and_the_old_one_dies_at_once(world: World) -> None:
    old = await world.service.login("alice", PASSWORD, CONTEXT)
    world.clock.advance(600)

    new = await world.service.refresh(old.token, CONTEXT)

    assert TOKEN_PATTERN.fullmatch(new.token)
    assert new.token != old.token
    assert new.session_id == old.session_id
    assert new.expires_at == old.expires_at  # the absolute lifetime is not extended
    assert (await world.service.authenticate(new.token)).session_id == old.session_id
    for replay in (
        world.service.authenticate(old.token),
        world.service.refresh(old.token, CONTEXT),
    ):
        with pytest.raises(ServiceError) as error:
            await replay
        assert error.value.code is ErrorCode.UNAUTHENTICATED
    refreshed = world.events.events[-1]
    assert refreshed.routing_key == "identity.session.refreshed"
    assert refreshed.data["session_id"] == old.session_id
    assert old.token not in _events_json(world.events)
    assert new.token not in _events_json(world.events)


async def test_two_refreshes_racing_with_one_token_yield_one_new_token(world: World) -> None:
    old = await world.service.login("alice", PASSWORD, CONTEXT)

    results = await asyncio.gather(
        world.service.refresh(old.token, CONTEXT),
        world.service.refresh(old.token, CONTEXT),
        return_exceptions=True,
    )

    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert sum(isinstance(r, ServiceError) for r in results) == 1


async def test_an_expired_session_cannot_be_refreshed(world: World) -> None:
    old = await world.service.login("alice", PASSWORD, CONTEXT)
    world.clock.advance(IDLE_SECONDS)
    with pytest.raises(ServiceError) as error:
        await world.service.refresh(old.token, CONTEXT)
    assert error.value.code is ErrorCode.UNAUTHENTICATED


# ---- listing and revoking one's sessions ------------------------------------------------------


async def test_a_user_lists_their_live_sessions_without_tokens(world: World) -> None:
    first = await world.service.login("alice", PASSWORD, CONTEXT)
    world.clock.advance(60)
    second = await world.service.login("alice", PASSWORD, CONTEXT)
    ended = await world.service.login("alice", PASSWORD, CONTEXT)
    await world.service.logout(ended.token, CONTEXT)
    await world.service.create_user("bob", "bob's long password", CONTEXT)
    await world.service.login("bob", "bob's long password", CONTEXT)

    sessions = await world.service.list_sessions("alice", current_session_id=second.session_id)

    assert [s.id for s in sessions] == [first.session_id, second.session_id]
    assert [s.current for s in sessions] == [False, True]
    assert sessions[0].created_at == world.clock.now - timedelta(seconds=60)
    assert sessions[0].idle_expires_at == sessions[0].last_seen_at + timedelta(seconds=IDLE_SECONDS)
    dumped = "".join(s.model_dump_json() for s in sessions)
    for token in (first.token, second.token):
        assert token not in dumped


async def test_a_user_revokes_one_of_their_sessions_but_not_someone_elses(world: World) -> None:
    mine = await world.service.login("alice", PASSWORD, CONTEXT)
    current = await world.service.login("alice", PASSWORD, CONTEXT)
    await world.service.create_user("bob", "bob's long password", CONTEXT)
    bobs = await world.service.login("bob", "bob's long password", CONTEXT)

    with pytest.raises(ServiceError) as others:
        await world.service.revoke_session("alice", bobs.session_id, CONTEXT)
    with pytest.raises(ServiceError) as malformed:
        await world.service.revoke_session("alice", "not-a-session-id", CONTEXT)
    await world.service.revoke_session("alice", mine.session_id, CONTEXT)

    assert others.value.code is malformed.value.code is ErrorCode.NOT_FOUND
    assert (await world.service.authenticate(bobs.token)).username == "bob"
    assert (await world.service.authenticate(current.token)).username == "alice"
    with pytest.raises(ServiceError):
        await world.service.authenticate(mine.token)
    assert world.events.events[-1].data == {
        "session_id": mine.session_id,
        "username": "alice",
        "reason": "revoked_by_owner",
    }


async def test_the_sweep_removes_expired_idle_and_revoked_sessions(world: World) -> None:
    revoked = await world.service.login("alice", PASSWORD, CONTEXT)
    await world.service.logout(revoked.token, CONTEXT)
    idle = await world.service.login("alice", PASSWORD, CONTEXT)
    world.clock.advance(IDLE_SECONDS - 10)
    live = await world.service.login("alice", PASSWORD, CONTEXT)
    world.clock.advance(10)

    result = await world.service.sweep()

    assert result.sessions_deleted == 2
    assert set(world.sessions.sessions) == {live.session_id}
    assert idle.session_id not in world.sessions.sessions


# ---- users: disable, delete, role changes ---------------------------------------------------


async def test_disabling_a_user_ends_their_sessions_at_once(world: World) -> None:
    sessions = [await world.service.login("alice", PASSWORD, CONTEXT) for _ in range(2)]

    view = await world.service.set_disabled("alice", disabled=True, context=ADMIN)

    assert view.disabled
    assert all(s.revoked for s in world.sessions.sessions.values())
    for session in sessions:
        with pytest.raises(ServiceError):
            await world.service.authenticate(session.token)
    types = world.events.types()
    assert types[-3:] == [
        "identity.session.revoked",
        "identity.session.revoked",
        "identity.user.disabled",
    ]
    assert world.events.events[-1].data == {
        "username": "alice",
        "sessions_revoked": 2,
        "api_keys_revoked": 0,
    }
    enabled = await world.service.set_disabled("alice", disabled=False, context=ADMIN)
    assert not enabled.disabled
    assert world.events.events[-1].data == {
        "username": "alice",
        "changed": ["enabled"],
        "sessions_revoked": 0,
    }
    await world.service.login("alice", PASSWORD, CONTEXT)


async def test_a_role_change_ends_the_users_sessions(world: World) -> None:
    session = await world.service.login("alice", PASSWORD, CONTEXT)

    result = await world.service.revoke_user_sessions("alice", ADMIN)

    assert result.sessions_revoked == 1
    with pytest.raises(ServiceError):
        await world.service.authenticate(session.token)
    assert world.events.events[-2].data["reason"] == "roles_changed"
    assert world.events.events[-1].data == {
        "username": "alice",
        "changed": ["roles"],
        "sessions_revoked": 1,
    }
    with pytest.raises(ServiceError) as unknown:
        await world.service.revoke_user_sessions("nobody", ADMIN)
    assert unknown.value.code is ErrorCode.NOT_FOUND


async def test_deleting_a_user_ends_their_sessions_and_frees_the_name(world: World) -> None:
    session = await world.service.login("alice", PASSWORD, CONTEXT)

    gone = await world.service.delete_user("alice", ADMIN)

    assert (gone.username, gone.generation) == ("alice", 1)
    with pytest.raises(ServiceError):
        await world.service.authenticate(session.token)
    with pytest.raises(ServiceError) as login:
        await world.service.login("alice", PASSWORD, CONTEXT)
    assert login.value.code is ErrorCode.INVALID_CREDENTIALS
    assert world.events.events[-1].routing_key == "identity.login.failed"
    deleted = next(e for e in world.events.events if e.routing_key == "identity.user.deleted")
    assert deleted.data == {
        "username": "alice",
        "generation": 1,
        "sessions_revoked": 1,
        "api_keys_revoked": 0,
    }
    with pytest.raises(ServiceError) as again:
        await world.service.delete_user("alice", ADMIN)
    assert again.value.code is ErrorCode.NOT_FOUND
    # The name is free again, for a new account that identity tells apart from the old one.
    again_alice = await world.service.create_user("alice", "a brand new password", ADMIN)
    assert again_alice.generation == 2
    assert (await world.service.get_user("alice")).generation == 2


@pytest.mark.parametrize("action", ["disable", "delete"])
async def test_an_admin_cannot_disable_or_delete_themselves(world: World, action: str) -> None:
    myself = RequestContext(actor="alice")
    attempt = (
        world.service.set_disabled("alice", disabled=True, context=myself)
        if action == "disable"
        else world.service.delete_user("alice", myself)
    )
    with pytest.raises(ServiceError) as error:
        await attempt
    assert error.value.code is ErrorCode.CONFLICT
    assert not world.users.users["alice"].disabled


async def test_get_user_is_not_found_for_unknown_names(world: World) -> None:
    assert (await world.service.get_user("alice")).username == "alice"
    with pytest.raises(ServiceError) as error:
        await world.service.get_user("nobody")
    assert error.value.code is ErrorCode.NOT_FOUND


async def test_a_login_whose_events_cannot_commit_opens_no_session(world: World) -> None:
    world.events.fail_commits = {"identity.session.created"}
    before = list(world.events.events)

    with pytest.raises(InMemoryUnitOfWork.CommitFailedError):
        await world.service.login("alice", PASSWORD, CONTEXT)

    assert await world.sessions.list_for_user("alice") == []
    assert world.events.events == before


async def test_a_disable_whose_events_cannot_commit_leaves_user_and_sessions(
    world: World,
) -> None:
    result = await world.service.login("alice", PASSWORD, CONTEXT)
    world.events.fail_commits = {"identity.user.disabled"}

    with pytest.raises(InMemoryUnitOfWork.CommitFailedError):
        await world.service.set_disabled("alice", disabled=True, context=ADMIN)

    assert not (await world.service.get_user("alice")).disabled
    assert (await world.service.authenticate(result.token)).username == "alice"
    assert "identity.session.revoked" not in world.events.types()
