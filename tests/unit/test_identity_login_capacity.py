"""Identity: login capacity. bcrypt runs in a pool sized to the usable cores with a bounded
queue; a login beyond it is refused at once with ``service_busy`` and Retry-After (503 at the
gateway), costs no failure on the throttle, and leaves nothing behind (decision 0003).
"""

from __future__ import annotations

import asyncio
import os

import bcrypt
import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import HTTP_STATUS, ErrorCode, ServiceError
from hypersdk_identity.adapters.outbound import bcrypt_hasher
from hypersdk_identity.adapters.outbound.bcrypt_hasher import BcryptPasswordHasher
from hypersdk_identity.adapters.outbound.memory import (
    InMemorySessionStore,
    InMemoryThrottleStore,
    InMemoryUserStore,
    InsecureFastHasher,
)
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_identity.core.throttle import LoginThrottle, ThrottleRule
from hypersdk_identity.ports.outbound import PasswordHasher
from hypersdk_kit.memory import InMemoryUnitOfWork

from .test_identity_sessions import Clock

PASSWORD = "correct horse battery"
ADMIN = RequestContext(actor="admin", source_ip="192.0.2.1", request_id="req-admin")


class SaturableHasher(InsecureFastHasher):
    """The hasher port as a full pool answers it while ``busy`` is set."""

    def __init__(self) -> None:
        self.busy = False

    async def hash(self, password: str) -> bytes:
        if self.busy:
            raise PasswordHasher.BusyError(2)
        return await super().hash(password)

    def full(self, *, suspicious: bool = False) -> int | None:
        return 2 if self.busy else None

    async def check(self, password: str, password_hash: bytes) -> bool:
        if self.busy:
            raise PasswordHasher.BusyError(2)
        return await super().check(password, password_hash)


class RacedHasher(SaturableHasher):
    """Has room when asked, but the last place is taken before the check starts."""

    def full(self, *, suspicious: bool = False) -> int | None:
        return None


class NearlyFullHasher(SaturableHasher):
    """Only the places reserved for addresses without recent failures are left."""

    def full(self, *, suspicious: bool = False) -> int | None:
        return 1 if suspicious else None


async def _identity(
    hasher: SaturableHasher | None = None, store: InMemoryThrottleStore | None = None
) -> tuple[IdentityService, SaturableHasher, InMemoryUnitOfWork]:
    hasher = hasher or SaturableHasher()
    events = InMemoryUnitOfWork(service="identity")
    clock = Clock()
    service = IdentityService(
        users=InMemoryUserStore(),
        sessions=InMemorySessionStore(),
        hasher=hasher,
        uow=events,
        session_policy=SessionPolicy(idle_seconds=1800, lifetime_seconds=43200),
        dummy_hash=await hasher.hash("dummy password for timing"),
        clock=clock,
        throttle=LoginThrottle(
            store=store or InMemoryThrottleStore(),
            username_rule=ThrottleRule(
                max_failures=3,
                window_seconds=120,
                lockout_seconds=300,
                free_failures=1,
                delay_base_seconds=5,
                delay_max_seconds=30,
            ),
            address_rule=ThrottleRule(max_failures=3, window_seconds=120, lockout_seconds=300),
            uow=events,
            clock=clock,
        ),
    )
    await service.create_user("alice", PASSWORD, ADMIN)
    events.events.clear()
    return service, hasher, events


def test_service_busy_is_a_503() -> None:
    assert HTTP_STATUS[ErrorCode.SERVICE_BUSY] == 503


async def test_a_login_while_the_pool_is_full_is_refused_at_once_with_retry_after() -> None:
    service, hasher, events = await _identity()
    hasher.busy = True
    context = RequestContext(source_ip="203.0.113.5", request_id="req-1")

    with pytest.raises(ServiceError) as error:
        await service.login("alice", PASSWORD, context)

    assert error.value.code is ErrorCode.SERVICE_BUSY
    assert error.value.retry_after_seconds == 2
    assert PASSWORD not in error.value.message
    assert events.events == []  # no session opened, no failure to record: nothing was checked


@pytest.mark.parametrize("hasher_type", [SaturableHasher, RacedHasher])
async def test_busy_refusals_cost_no_failure_on_the_throttle(
    hasher_type: type[SaturableHasher],
) -> None:
    service, hasher, _ = await _identity(hasher_type())
    context = RequestContext(source_ip="203.0.113.5", request_id="req-1")
    hasher.busy = True
    for _ in range(10):  # far beyond both lockout thresholds (3)
        with pytest.raises(ServiceError) as error:
            await service.login("alice", PASSWORD, context)
        assert error.value.code is ErrorCode.SERVICE_BUSY
    hasher.busy = False

    result = await service.login("alice", PASSWORD, context)

    assert result.user.username == "alice"


async def test_the_last_places_are_kept_for_addresses_without_recent_failures() -> None:
    store = InMemoryThrottleStore()
    service, _, _ = await _identity(NearlyFullHasher(), store)
    attacker = RequestContext(source_ip="198.51.100.7", request_id="req-a")
    legitimate = RequestContext(source_ip="203.0.113.5", request_id="req-l")
    with pytest.raises(ServiceError) as first:
        await service.login("mallory", "a guess at a password", attacker)
    assert first.value.code is ErrorCode.INVALID_CREDENTIALS  # a clean address: checked

    for _ in range(5):  # the address failed recently: only reserved places are left
        with pytest.raises(ServiceError) as refused:
            await service.login("mallory", "another guess at it", attacker)
        assert refused.value.code is ErrorCode.SERVICE_BUSY
        assert refused.value.retry_after_seconds == 1
    result = await service.login("alice", PASSWORD, legitimate)

    assert result.user.username == "alice"
    # The refusals were withdrawn: the address still has its one failure, not six.
    state = await store.get("address", "198.51.100.7")
    assert state is not None
    assert state.failures == 1


async def test_creating_a_user_while_the_pool_is_full_is_service_busy() -> None:
    service, hasher, events = await _identity()
    hasher.busy = True

    with pytest.raises(ServiceError) as error:
        await service.create_user("bob", "a long enough password", ADMIN)

    assert error.value.code is ErrorCode.SERVICE_BUSY
    assert [user.username for user in await service.list_users()] == ["alice"]
    assert events.events == []


# ---- the bcrypt adapter ----------------------------------------------------------------------


def test_the_pool_is_sized_to_the_cores_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3}, raising=False)
    assert bcrypt_hasher.usable_cores() == 4
    assert BcryptPasswordHasher().workers == 3
    assert BcryptPasswordHasher().queue == 12
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert BcryptPasswordHasher().workers == 1


async def test_checks_beyond_the_threads_and_the_queue_are_refused_without_waiting() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=1)
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))  # ~60 ms a check
    loop = asyncio.get_running_loop()

    running = asyncio.ensure_future(hasher.check(PASSWORD, stored))
    waiting = asyncio.ensure_future(hasher.check("a wrong password", stored))
    await asyncio.sleep(0)
    started = loop.time()
    with pytest.raises(PasswordHasher.BusyError) as busy:
        await hasher.check(PASSWORD, stored)
    refused_in = loop.time() - started

    assert refused_in < 0.01
    assert hasher.full() == busy.value.retry_after_seconds
    assert hasher.full(suspicious=True) == busy.value.retry_after_seconds
    assert busy.value.retry_after_seconds >= 1
    assert await running is True
    assert await waiting is False
    await asyncio.sleep(0)  # the done callbacks released both places
    assert hasher.in_flight == 0
    assert hasher.full() is None
    assert await hasher.check(PASSWORD, stored) is True


async def test_a_threads_worth_of_places_is_reserved_for_unsuspicious_logins() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=2)
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))
    assert hasher.reserved == 1
    assert hasher.full(suspicious=True) is None

    checks = [asyncio.ensure_future(hasher.check(PASSWORD, stored)) for _ in range(2)]
    await asyncio.sleep(0)

    assert hasher.full(suspicious=True) == 1
    assert hasher.full() is None  # the reserved place
    await asyncio.gather(*checks)


async def test_an_abandoned_check_keeps_its_place_until_its_thread_is_done() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=0)
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))
    abandoned = asyncio.ensure_future(hasher.check(PASSWORD, stored))
    await asyncio.sleep(0.01)  # its thread is checking now
    abandoned.cancel()

    with pytest.raises(PasswordHasher.BusyError):
        await hasher.check(PASSWORD, stored)
    for _ in range(100):
        if hasher.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert await hasher.check(PASSWORD, stored) is True


async def test_a_login_from_an_address_without_failures_is_checked_before_a_storms() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=4)
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))  # ~60 ms a check
    order: list[str] = []

    async def check(name: str, *, suspicious: bool) -> None:
        with hasher.first_for(suspicious=suspicious):
            await hasher.check(PASSWORD, stored)
        order.append(name)

    running = asyncio.ensure_future(check("running", suspicious=True))
    await asyncio.sleep(0)  # it holds the only thread
    storm = [asyncio.ensure_future(check(f"storm-{i}", suspicious=True)) for i in range(3)]
    await asyncio.sleep(0)
    legitimate = asyncio.ensure_future(check("legitimate", suspicious=False))
    await asyncio.gather(running, *storm, legitimate)

    # Behind the check already running, ahead of the storm's that were waiting before it.
    assert order == ["running", "legitimate", "storm-0", "storm-1", "storm-2"]
    assert hasher.in_flight == 0


async def test_the_reserved_places_hold_for_checks_that_came_past_full_together() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=2)  # 3 places, the last reserved
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))

    async def check(*, suspicious: bool) -> bool:
        with hasher.first_for(suspicious=suspicious):
            return await hasher.check(PASSWORD, stored)

    # Both asked full() while it was free; they reach the pool one after the other.
    assert hasher.full(suspicious=True) is None
    first = [asyncio.ensure_future(check(suspicious=True)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(PasswordHasher.BusyError):
        await check(suspicious=True)
    clean = asyncio.ensure_future(check(suspicious=False))

    assert await asyncio.gather(*first, clean) == [True, True, True]
