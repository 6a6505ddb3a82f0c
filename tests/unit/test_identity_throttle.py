"""Identity: brute-force protection, counted per user name and per client address.

Delays after the free failures, a lockout after max_failures within the window, 429 with a
retry time, lockouts and unlocks as events, admin unlock, expiry by the sweeper, and the
compare-and-swap that keeps parallel guesses from slipping past the counter.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_identity.adapters.outbound.memory import (
    InMemorySessionStore,
    InMemoryThrottleStore,
    InMemoryUserStore,
    InsecureFastHasher,
)
from hypersdk_identity.core.models import ThrottleState
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_identity.core.throttle import LoginThrottle, ThrottleRule
from hypersdk_kit.memory import InMemoryUnitOfWork

from .test_identity_sessions import Clock

PASSWORD = "correct horse battery"
WRONG = "not the password at all"
ADDRESS = "203.0.113.9"
ADMIN = RequestContext(actor="admin", source_ip="192.0.2.1", request_id="req-admin")
USERNAME_RULE = ThrottleRule(
    max_failures=5,
    window_seconds=120,
    lockout_seconds=300,
    free_failures=2,
    delay_base_seconds=1,
    delay_max_seconds=30,
)
ADDRESS_RULE = ThrottleRule(max_failures=8, window_seconds=120, lockout_seconds=300)


def at(address: str = ADDRESS, request_id: str = "req-1") -> RequestContext:
    return RequestContext(source_ip=address, request_id=request_id)


class SpyHasher(InsecureFastHasher):
    """Records every password it is asked to check."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    async def check(self, password: str, password_hash: bytes) -> bool:
        self.checked.append(password)
        return await super().check(password, password_hash)


@dataclass
class World:
    service: IdentityService
    store: InMemoryThrottleStore
    events: InMemoryUnitOfWork
    clock: Clock
    sessions: InMemorySessionStore
    hasher: SpyHasher

    def routing_keys(self) -> list[str]:
        return self.events.types()

    def published(self, routing_key: str) -> list[dict[str, object]]:
        return [e.data for e in self.events.events if e.routing_key == routing_key]

    async def attempt(
        self, username: str, password: str, context: RequestContext
    ) -> ServiceError | None:
        try:
            await self.service.login(username, password, context)
        except ServiceError as error:
            return error
        return None


@pytest.fixture
async def world() -> World:
    hasher = SpyHasher()
    events = InMemoryUnitOfWork(service="identity")
    clock = Clock()
    store = InMemoryThrottleStore()
    sessions = InMemorySessionStore()
    service = IdentityService(
        users=InMemoryUserStore(),
        sessions=sessions,
        hasher=hasher,
        uow=events,
        session_policy=SessionPolicy(idle_seconds=1800, lifetime_seconds=43200),
        dummy_hash=await hasher.hash("dummy password for timing"),
        clock=clock,
        throttle=LoginThrottle(
            store=store,
            username_rule=USERNAME_RULE,
            address_rule=ADDRESS_RULE,
            uow=events,
            clock=clock,
        ),
    )
    await service.create_user("alice", PASSWORD, ADMIN)
    events.events.clear()
    return World(service, store, events, clock, sessions, hasher)


# ---- the rule -----------------------------------------------------------------------------


def test_delays_start_after_the_free_failures_and_double() -> None:
    assert [USERNAME_RULE.delay_after(n) for n in range(7)] == [0, 0, 0, 1, 2, 4, 8]
    capped = ThrottleRule(
        max_failures=99, window_seconds=60, lockout_seconds=60, delay_base_seconds=5,
        delay_max_seconds=12,
    )  # fmt: skip
    assert [capped.delay_after(n) for n in range(1, 5)] == [5, 10, 12, 12]


def test_failures_outside_the_window_no_longer_count(world: World) -> None:
    now = world.clock.now
    state = ThrottleState(
        kind="username", key="alice", failures=4, window_started_at=now, last_failure_at=now
    )
    assert USERNAME_RULE.failures_at(state, now + timedelta(seconds=119)) == 4
    assert USERNAME_RULE.failures_at(state, now + timedelta(seconds=120)) == 0
    recharged = USERNAME_RULE.charge(state, now + timedelta(seconds=121))
    assert (recharged.failures, recharged.window_started_at) == (1, now + timedelta(seconds=121))


# ---- per user name ------------------------------------------------------------------------


async def test_a_typo_then_the_right_password_is_not_delayed(world: World) -> None:
    assert (await world.attempt("alice", WRONG, at())).code is ErrorCode.INVALID_CREDENTIALS
    assert await world.attempt("alice", PASSWORD, at()) is None
    # Success forgot the name's failures: the budget is whole again.
    assert ("username", "alice") not in world.store.states


async def test_failures_bring_growing_delays_then_a_lockout(world: World) -> None:
    for _ in range(3):  # two free failures, and the third that starts the delays
        assert (await world.attempt("alice", WRONG, at())).code is ErrorCode.INVALID_CREDENTIALS

    early = await world.attempt("alice", PASSWORD, at())
    assert early is not None
    assert early.code is ErrorCode.RATE_LIMITED
    assert early.retry_after_seconds == 1
    world.clock.advance(1)
    assert (await world.attempt("alice", WRONG, at())).code is ErrorCode.INVALID_CREDENTIALS
    assert (await world.attempt("alice", WRONG, at())).retry_after_seconds == 2
    world.clock.advance(2)
    assert (await world.attempt("alice", WRONG, at())).code is ErrorCode.INVALID_CREDENTIALS

    # Five failures within two minutes: locked for five minutes, even with the right password.
    locked = await world.attempt("alice", PASSWORD, at())
    assert locked is not None
    assert locked.code is ErrorCode.RATE_LIMITED
    assert locked.retry_after_seconds == 300
    assert locked.message == early.message  # one message for delays and lockouts
    (lockout,) = world.published("identity.account.locked")
    assert lockout["username"] == "alice"
    assert lockout["address"] is None
    assert lockout["failures"] == 5
    world.clock.advance(299)
    assert (await world.attempt("alice", PASSWORD, at())).retry_after_seconds == 1
    world.clock.advance(1)
    assert await world.attempt("alice", PASSWORD, at()) is None
    reasons = [d["reason"] for d in world.published("identity.login.failed")]
    assert reasons == [
        *["invalid_credentials"] * 3, "throttled", "invalid_credentials", "throttled",
        "invalid_credentials", "locked", "locked",
    ]  # fmt: skip
    (unlocked,) = world.published("identity.account.unlocked")
    assert unlocked == {"username": "alice", "address": None, "reason": "expired"}


async def test_unknown_user_names_are_throttled_exactly_like_known_ones(world: World) -> None:
    async def run(username: str) -> list[tuple[ErrorCode, int | None]]:
        outcomes = []
        for _ in range(7):
            error = await world.attempt(username, WRONG, at(f"198.51.100.{len(username)}"))
            assert error is not None
            outcomes.append((error.code, error.retry_after_seconds))
            world.clock.advance(0.5)
        return outcomes

    known = await run("alice")
    unknown = await run("nobody-here")
    assert known == unknown
    assert (ErrorCode.RATE_LIMITED, 1) in known


async def test_the_user_name_counter_ignores_case(world: World) -> None:
    for name in ("alice", "ALICE", "Alice"):
        await world.attempt(name, WRONG, at())
    error = await world.attempt("aLiCe", WRONG, at())
    assert error is not None
    assert error.code is ErrorCode.RATE_LIMITED


async def test_parallel_guesses_cannot_slip_past_the_counter(world: World) -> None:
    # Every attempt is charged before its password is checked: of 20 guesses sent at once,
    # only the free ones (and the one after which delays begin) reach the password check.
    results = await asyncio.gather(*(world.attempt("alice", WRONG, at()) for _ in range(20)))
    codes = [r.code for r in results if r is not None]
    assert codes.count(ErrorCode.INVALID_CREDENTIALS) == USERNAME_RULE.free_failures + 1
    assert codes.count(ErrorCode.RATE_LIMITED) == 20 - USERNAME_RULE.free_failures - 1


# ---- per client address -------------------------------------------------------------------


async def test_spraying_many_names_from_one_address_locks_the_address(world: World) -> None:
    for index in range(ADDRESS_RULE.max_failures):
        error = await world.attempt(f"user{index}", WRONG, at())
        assert error is not None
        assert error.code is ErrorCode.INVALID_CREDENTIALS

    blocked = await world.attempt("alice", PASSWORD, at())
    elsewhere = await world.attempt("alice", PASSWORD, at("198.51.100.77"))

    assert blocked is not None
    assert blocked.code is ErrorCode.RATE_LIMITED
    assert blocked.retry_after_seconds == 300
    assert elsewhere is None
    (lockout,) = world.published("identity.account.locked")
    assert lockout["address"] == ADDRESS
    assert lockout["username"] is None


async def test_good_logins_from_a_busy_address_do_not_lock_it(world: World) -> None:
    for _ in range(ADDRESS_RULE.max_failures * 3):
        assert await world.attempt("alice", PASSWORD, at()) is None
    assert world.store.states[("address", ADDRESS)].failures == 0
    assert "identity.account.locked" not in world.routing_keys()


async def test_a_login_without_a_client_address_counts_only_the_name(world: World) -> None:
    await world.attempt("alice", WRONG, RequestContext(actor="bootstrap"))
    assert set(world.store.states) == {("username", "alice")}


# ---- unlocking ----------------------------------------------------------------------------


async def _lock_alice(world: World) -> None:
    for _ in range(USERNAME_RULE.max_failures):
        await world.attempt("alice", WRONG, at())
        world.clock.advance(20)  # past every delay, within the two-minute window
    assert world.published("identity.account.locked")


async def test_an_admin_unlocks_a_user_and_it_is_an_event(world: World) -> None:
    await _lock_alice(world)
    assert (await world.service.get_user("alice")).locked_until is not None

    assert await world.service.unlock_user("alice", ADMIN)

    assert await world.attempt("alice", PASSWORD, at()) is None
    unlocked = next(e for e in world.events.events if e.routing_key == "identity.account.unlocked")
    assert unlocked.data == {"username": "alice", "address": None, "reason": "admin"}
    assert unlocked.actor == "admin"
    assert (await world.service.get_user("alice")).locked_until is None
    assert not await world.service.unlock_user("alice", ADMIN)  # nothing locked: no event
    assert len(world.published("identity.account.unlocked")) == 1


async def test_the_sweeper_ends_expired_lockouts_once(world: World) -> None:
    await _lock_alice(world)
    world.clock.advance(USERNAME_RULE.lockout_seconds)

    first = await world.service.sweep()
    second = await world.service.sweep()

    assert (first.lockouts_ended, second.lockouts_ended) == (1, 0)
    assert world.published("identity.account.unlocked") == [
        {"username": "alice", "address": None, "reason": "expired"}
    ]
    assert ("username", "alice") not in world.store.states


async def test_the_sweeper_forgets_stale_counters_without_events(world: World) -> None:
    await world.attempt("alice", WRONG, at())
    world.clock.advance(USERNAME_RULE.window_seconds + 1)

    result = await world.service.sweep()

    assert result.lockouts_ended == 0
    assert world.store.states == {}
    assert "identity.account.unlocked" not in world.routing_keys()


async def test_throttled_and_locked_attempts_never_reach_the_password_check(world: World) -> None:
    for _ in range(3):
        await world.attempt("alice", WRONG, at())
    await world.attempt("alice", "guess-while-delayed", at())
    assert "guess-while-delayed" not in world.hasher.checked
    assert world.hasher.checked == [WRONG] * 3


async def test_lockout_events_carry_no_password(world: World) -> None:
    await _lock_alice(world)
    published = "\n".join(e.model_dump_json() for e in world.events.events)
    assert WRONG not in published
    assert PASSWORD not in published


def test_without_delays_a_later_failure_elsewhere_does_not_throttle(world: World) -> None:
    # Another replica's clock may be a little ahead: its last failure then lies in our future.
    rule = ThrottleRule(max_failures=5, window_seconds=120, lockout_seconds=300)
    now = world.clock.now
    state = ThrottleState(
        kind="address",
        key=ADDRESS,
        failures=2,
        window_started_at=now,
        last_failure_at=now + timedelta(milliseconds=5),
    )
    assert rule.wait_seconds(state, now) is None
