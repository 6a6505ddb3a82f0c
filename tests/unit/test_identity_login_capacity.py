"""Identity: login capacity. bcrypt runs in a pool sized to the usable cores with a bounded
queue; a login beyond it is refused at once with ``service_busy`` and Retry-After (503 at the
gateway), costs no failure on the throttle, and leaves nothing behind (decision 0003).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import bcrypt
import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import HTTP_STATUS, ErrorCode, ServiceError
from hypersdk_identity.adapters.outbound import bcrypt_hasher
from hypersdk_identity.adapters.outbound.bcrypt_hasher import BcryptPasswordHasher
from hypersdk_identity.adapters.outbound.memory import (
    InMemorySessionStore,
    InMemoryThrottleStore,
    InMemoryTrustStore,
    InMemoryUserStore,
    InsecureFastHasher,
)
from hypersdk_identity.core.models import Standing, User
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_identity.core.throttle import LoginThrottle, ThrottleRule, TrustRule
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

    def full(self, *, standing: Standing) -> int | None:
        return 2 if self.busy else None

    async def check(self, password: str, password_hash: bytes) -> bool:
        if self.busy:
            raise PasswordHasher.BusyError(2)
        return await super().check(password, password_hash)


class RacedHasher(SaturableHasher):
    """Has room when asked, but the last place is taken before the check starts."""

    def full(self, *, standing: Standing) -> int | None:
        return None


class NearlyFullHasher(SaturableHasher):
    """Only the places kept for addresses without recent failures are left."""

    def full(self, *, standing: Standing) -> int | None:
        return 1 if standing is Standing.SUSPICIOUS else None


async def _identity(
    hasher: SaturableHasher | None = None,
    store: InMemoryThrottleStore | None = None,
    clock: Clock | None = None,
) -> tuple[IdentityService, SaturableHasher, InMemoryUnitOfWork]:
    hasher = hasher or SaturableHasher()
    events = InMemoryUnitOfWork(service="identity")
    clock = clock or Clock()
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
    clock = Clock()
    service, hasher, _ = await _identity(hasher_type(), clock=clock)
    context = RequestContext(source_ip="203.0.113.5", request_id="req-1")
    hasher.busy = True
    for _ in range(10):  # far beyond both lockout thresholds (3)
        with pytest.raises(ServiceError) as error:
            await service.login("alice", PASSWORD, context)
        assert error.value.code is ErrorCode.SERVICE_BUSY
        assert error.value.retry_after_seconds is not None
        clock.advance(error.value.retry_after_seconds)  # a client that honours Retry-After
    hasher.busy = False

    result = await service.login("alice", PASSWORD, context)

    assert result.user.username == "alice"


async def test_the_last_places_are_kept_for_addresses_without_recent_failures() -> None:
    store = InMemoryThrottleStore()
    clock = Clock()
    service, _, _ = await _identity(NearlyFullHasher(), store, clock)
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
        clock.advance(1)  # an attacker that waits as told (one that does not: below)
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
    for standing in Standing:
        assert hasher.full(standing=standing) == busy.value.retry_after_seconds
    assert busy.value.retry_after_seconds >= 1
    assert await running is True
    assert await waiting is False
    await asyncio.sleep(0)  # the done callbacks released both places
    assert hasher.in_flight == 0
    assert hasher.full(standing=Standing.SUSPICIOUS) is None
    assert await hasher.check(PASSWORD, stored) is True


@pytest.mark.parametrize(
    ("workers", "queue", "places"),
    [
        (1, 4, (5, 4, 3)),  # the default on 2 cores: a thread's worth kept at each step
        (3, 12, (15, 12, 9)),
        (1, 1, (2, 1, 1)),  # a short queue: the trusted keep what there is, all fill the threads
        (2, 0, (2, 2, 2)),  # no queue: nothing to keep, every standing may fill the threads
    ],
)
def test_each_standing_keeps_a_threads_worth_of_places_from_the_ones_after_it(
    workers: int, queue: int, places: tuple[int, int, int]
) -> None:
    hasher = BcryptPasswordHasher(workers=workers, queue=queue)

    assert tuple(hasher.places[standing] for standing in Standing) == places
    assert hasher.places[Standing.TRUSTED] == workers + queue
    assert hasher.places[Standing.SUSPICIOUS] >= workers


async def test_a_full_pool_for_one_standing_still_has_room_for_the_better_ones() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=4)  # places 5, 4, 3
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))
    # The first check holds the only thread for a second or so: none ends while places count.
    slow = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=13))

    async def check(standing: Standing, password_hash: bytes = stored) -> bool:
        with hasher.first_for(standing=standing):
            return await hasher.check(PASSWORD, password_hash)

    checks = [asyncio.ensure_future(check(Standing.SUSPICIOUS, slow))]
    checks += [asyncio.ensure_future(check(Standing.SUSPICIOUS)) for _ in range(2)]
    await asyncio.sleep(0)
    assert hasher.full(standing=Standing.SUSPICIOUS) == 1
    assert hasher.full(standing=Standing.UNKNOWN) is None
    with pytest.raises(PasswordHasher.BusyError):  # past full() too: refused at submission
        await check(Standing.SUSPICIOUS)

    checks.append(asyncio.ensure_future(check(Standing.UNKNOWN)))
    await asyncio.sleep(0)
    assert hasher.full(standing=Standing.UNKNOWN) == 1
    assert hasher.full(standing=Standing.TRUSTED) is None
    with pytest.raises(PasswordHasher.BusyError):
        await check(Standing.UNKNOWN)

    checks.append(asyncio.ensure_future(check(Standing.TRUSTED)))
    await asyncio.sleep(0)
    assert hasher.full(standing=Standing.TRUSTED) == 1
    with pytest.raises(PasswordHasher.BusyError):
        await check(Standing.TRUSTED)
    assert await asyncio.gather(*checks) == [True] * 5


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


async def test_checks_start_in_standing_order_first_come_first_within_one() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=4)
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))  # ~60 ms a check
    order: list[str] = []

    slow = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12))  # holds the thread

    async def check(name: str, standing: Standing, password_hash: bytes = stored) -> None:
        with hasher.first_for(standing=standing):
            await hasher.check(PASSWORD, password_hash)
        order.append(name)

    running = asyncio.ensure_future(check("running", Standing.SUSPICIOUS, slow))
    await asyncio.sleep(0)  # it holds the only thread
    storm = [asyncio.ensure_future(check(f"storm-{i}", Standing.SUSPICIOUS)) for i in range(2)]
    await asyncio.sleep(0)
    newcomer = asyncio.ensure_future(check("newcomer", Standing.UNKNOWN))
    await asyncio.sleep(0)
    known = asyncio.ensure_future(check("known", Standing.TRUSTED))
    await asyncio.gather(running, *storm, newcomer, known)

    # Behind the check already running; the known user before the newcomer, who came first,
    # and both before the storm's checks that were waiting before them.
    assert order == ["running", "known", "newcomer", "storm-0", "storm-1"]
    assert hasher.in_flight == 0


async def test_work_outside_a_login_counts_as_trusted() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=2)  # places 3, 2, 1
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))
    with hasher.first_for(standing=Standing.UNKNOWN):
        checks = [asyncio.ensure_future(hasher.check(PASSWORD, stored)) for _ in range(2)]
    await asyncio.sleep(0)

    # An administrator creating a user takes the place kept for trusted logins.
    checks.append(asyncio.ensure_future(hasher.check(PASSWORD, stored)))
    assert await asyncio.gather(*checks) == [True] * 3


async def test_the_kept_places_hold_for_checks_that_came_past_full_together() -> None:
    hasher = BcryptPasswordHasher(workers=1, queue=2)  # places 3, 2, 1
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))

    async def check(standing: Standing) -> bool:
        with hasher.first_for(standing=standing):
            return await hasher.check(PASSWORD, stored)

    # Both asked full() while it was free; they reach the pool one after the other.
    assert hasher.full(standing=Standing.UNKNOWN) is None
    first = [asyncio.ensure_future(check(Standing.UNKNOWN)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(PasswordHasher.BusyError):
        await check(Standing.UNKNOWN)
    trusted = asyncio.ensure_future(check(Standing.TRUSTED))

    assert await asyncio.gather(*first, trusted) == [True, True, True]


# ---- the standing of a login (decision 0039) -------------------------------------------------

KNOWN_AT = "203.0.113.10"
ELSEWHERE = "203.0.113.20"
WRONG = "not the password at all"
TRUST_SECONDS = 3600


class StandingHasher(InsecureFastHasher):
    """Records the standing each login's check is made under; ``busy_for`` standings are full."""

    def __init__(self) -> None:
        self.standings: list[Standing] = []
        self.asked: list[Standing] = []
        self.busy_for: set[Standing] = set()

    def full(self, *, standing: Standing) -> int | None:
        self.asked.append(standing)
        return 1 if standing in self.busy_for else None

    @contextmanager
    def first_for(self, *, standing: Standing) -> Iterator[None]:
        self.standings.append(standing)
        yield


@dataclass
class Standings:
    service: IdentityService
    hasher: StandingHasher
    users: InMemoryUserStore
    trust: InMemoryTrustStore
    throttle_store: InMemoryThrottleStore
    clock: Clock

    async def login(self, username: str, password: str, address: str) -> ErrorCode | None:
        """The error code of a login, None when it opened a session."""
        try:
            await self.service.login(username, password, RequestContext(source_ip=address))
        except ServiceError as error:
            return error.code
        return None

    async def standing_of(self, username: str, password: str, address: str) -> Standing:
        """The standing the next login's password check is made under."""
        await self.login(username, password, address)
        return self.hasher.standings[-1]


async def _standings(
    *, addresses_per_user: int = 4, hasher: PasswordHasher | None = None
) -> Standings:
    fake = StandingHasher()
    events = InMemoryUnitOfWork(service="identity")
    clock = Clock()
    trust = InMemoryTrustStore()
    throttle_store = InMemoryThrottleStore()
    users = InMemoryUserStore()
    service = IdentityService(
        users=users,
        sessions=InMemorySessionStore(),
        hasher=hasher or fake,
        uow=events,
        session_policy=SessionPolicy(idle_seconds=1800, lifetime_seconds=43200),
        dummy_hash=await fake.hash("dummy password for timing"),
        clock=clock,
        throttle=LoginThrottle(
            store=throttle_store,
            username_rule=ThrottleRule(max_failures=5, window_seconds=120, lockout_seconds=300),
            address_rule=ThrottleRule(max_failures=20, window_seconds=120, lockout_seconds=300),
            uow=events,
            clock=clock,
            trust=trust,
            trust_rule=TrustRule(seconds=TRUST_SECONDS, addresses_per_user=addresses_per_user),
        ),
    )
    await service.create_user("alice", PASSWORD, ADMIN)
    await service.create_user("bob", PASSWORD, ADMIN)
    return Standings(service, fake, users, trust, throttle_store, clock)


async def test_a_pair_is_trusted_only_after_a_good_login_from_that_address() -> None:
    world = await _standings()

    assert await world.standing_of("alice", PASSWORD, KNOWN_AT) is Standing.UNKNOWN
    assert world.trust.pairs == {("alice", KNOWN_AT): world.clock.now + timedelta(hours=1)}

    assert await world.standing_of("alice", PASSWORD, KNOWN_AT) is Standing.TRUSTED
    # The pair, not the address or the name: bob there and alice elsewhere are not trusted.
    assert await world.standing_of("bob", PASSWORD, KNOWN_AT) is Standing.UNKNOWN
    assert await world.standing_of("alice", PASSWORD, ELSEWHERE) is Standing.UNKNOWN


async def test_wrong_passwords_never_make_a_pair_trusted() -> None:
    world = await _standings()
    attacker = "198.51.100.66"

    standings = []
    for _ in range(4):  # below both lockouts
        assert await world.login("alice", WRONG, attacker) is ErrorCode.INVALID_CREDENTIALS
        standings.append(world.hasher.standings[-1])

    assert standings == [Standing.UNKNOWN] + [Standing.SUSPICIOUS] * 3
    assert world.trust.pairs == {}


async def test_a_disabled_user_with_the_right_password_is_not_trusted() -> None:
    world = await _standings()
    await world.service.set_disabled("alice", disabled=True, context=ADMIN)

    assert await world.login("alice", PASSWORD, KNOWN_AT) is ErrorCode.INVALID_CREDENTIALS
    assert world.trust.pairs == {}


async def test_trust_expires_and_is_swept() -> None:
    world = await _standings()
    await world.login("alice", PASSWORD, KNOWN_AT)

    world.clock.advance(TRUST_SECONDS - 1)
    assert await world.standing_of("alice", PASSWORD, KNOWN_AT) is Standing.TRUSTED  # extended
    world.clock.advance(TRUST_SECONDS)
    assert await world.standing_of("alice", PASSWORD, KNOWN_AT) is Standing.UNKNOWN
    world.clock.advance(TRUST_SECONDS)
    await world.service.sweep()
    assert world.trust.pairs == {}


async def test_a_user_name_keeps_a_bounded_number_of_trusted_addresses() -> None:
    world = await _standings(addresses_per_user=2)
    for address in ("192.0.2.11", "192.0.2.12", "192.0.2.13"):
        await world.login("alice", PASSWORD, address)
        world.clock.advance(1)

    assert sorted(world.trust.pairs) == [("alice", "192.0.2.12"), ("alice", "192.0.2.13")]
    assert await world.standing_of("alice", PASSWORD, "192.0.2.11") is Standing.UNKNOWN


async def test_a_wrong_password_on_a_trusted_pair_ends_its_trust() -> None:
    world = await _standings()
    await world.login("alice", PASSWORD, KNOWN_AT)

    assert await world.standing_of("alice", WRONG, KNOWN_AT) is Standing.TRUSTED
    assert world.trust.pairs == {}
    assert await world.standing_of("alice", WRONG, KNOWN_AT) is Standing.SUSPICIOUS


async def test_disabling_or_deleting_a_user_forgets_their_trusted_addresses() -> None:
    world = await _standings()
    for username in ("alice", "bob"):
        await world.login(username, PASSWORD, KNOWN_AT)

    await world.service.set_disabled("alice", disabled=True, context=ADMIN)
    await world.service.delete_user("bob", ADMIN)

    assert world.trust.pairs == {}


async def _history(world: Standings, history: str) -> None:
    """Put ``KNOWN_AT`` in a state: fresh, a recent failure, or alice trusted there."""
    if history == "failed":
        await world.login("carol", WRONG, KNOWN_AT)
    elif history == "alice trusted":
        await world.login("alice", PASSWORD, KNOWN_AT)


@pytest.mark.parametrize("history", ["fresh", "failed", "alice trusted"])
async def test_an_unknown_user_name_gets_the_standing_of_a_wrong_password(history: str) -> None:
    standings, answers = [], []
    for username in ("bob", "nobody-here"):  # bob exists, nobody-here does not
        world = await _standings()
        await _history(world, history)
        answers.append(await world.login(username, WRONG, KNOWN_AT))
        standings.append(world.hasher.standings[-1])
        assert world.hasher.asked[-1] is standings[-1]  # the places asked for too

    assert answers == [ErrorCode.INVALID_CREDENTIALS] * 2
    assert standings[0] is standings[1]
    expected = Standing.SUSPICIOUS if history == "failed" else Standing.UNKNOWN
    assert standings[0] is expected


async def test_coming_back_before_retry_after_makes_an_address_suspicious() -> None:
    world = await _standings()
    world.hasher.busy_for = {Standing.UNKNOWN, Standing.SUSPICIOUS}
    storm, patient = "198.51.100.8", "203.0.113.30"

    for address in (storm, patient):
        assert await world.login("nobody", WRONG, address) is ErrorCode.SERVICE_BUSY
        assert world.hasher.asked[-1] is Standing.UNKNOWN
    world.clock.advance(0.1)  # a storm retries at once
    assert await world.login("nobody", WRONG, storm) is ErrorCode.SERVICE_BUSY
    assert world.hasher.asked[-1] is Standing.SUSPICIOUS
    world.clock.advance(1)  # a client that honours Retry-After: 1
    assert await world.login("nobody", WRONG, patient) is ErrorCode.SERVICE_BUSY
    assert world.hasher.asked[-1] is Standing.UNKNOWN

    # The early return makes the storm's address suspicious for the window (120 s here),
    # however long it then waits, and costs it no failure; the patient one's refusals cost
    # nothing at all.
    world.hasher.busy_for = set()
    world.clock.advance(60)
    assert await world.standing_of("alice", PASSWORD, storm) is Standing.SUSPICIOUS
    assert await world.standing_of("bob", PASSWORD, patient) is Standing.UNKNOWN
    for address in (storm, patient):
        state = await world.throttle_store.get("address", address)
        assert state is not None
        assert state.failures == 0
    world.clock.advance(61)  # the window passed without another early return
    assert await world.standing_of("carol", PASSWORD, storm) is Standing.UNKNOWN


async def test_early_returns_from_a_shared_address_never_lock_it_out() -> None:
    """An office behind one NAT address: its users' returns look early to one another."""
    world = await _standings()  # the address rule locks at 20 failures
    world.hasher.busy_for = {Standing.UNKNOWN, Standing.SUSPICIOUS}
    office = "198.51.100.9"

    answers = []
    for attempt in range(40):
        answers.append(await world.login(f"user-{attempt % 8}", PASSWORD, office))
        world.clock.advance(0.1)

    assert answers == [ErrorCode.SERVICE_BUSY] * 40  # busy, never 429
    assert world.hasher.asked[-1] is Standing.SUSPICIOUS  # they wait behind newcomers
    world.hasher.busy_for = set()
    assert await world.login("alice", PASSWORD, office) is None


async def test_a_known_user_logging_in_again_during_a_storm_is_checked_next() -> None:
    pool = BcryptPasswordHasher(workers=1, queue=4)  # places 5, 4, 3
    world = await _standings(hasher=pool)
    stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))  # ~60 ms a check
    # dave's hash at a cheap cost (the pool checks any cost), alice's is the fake's.
    dave = User(username="dave", source="local", password_hash=stored, created_at=world.clock.now)
    await world.users.add(dave)
    await world.login("dave", PASSWORD, KNOWN_AT)
    order: list[str] = []

    slow = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12))  # holds the thread

    async def storm_check(index: int, standing: Standing) -> None:
        with pool.first_for(standing=standing):
            await pool.check(WRONG, slow if index == 0 else stored)
        order.append(f"storm-{index}")

    async def known_user() -> None:
        assert await world.login("dave", PASSWORD, KNOWN_AT) is None
        order.append("dave")

    # A storm holds every place but those kept for trusted logins.
    storm = [asyncio.ensure_future(storm_check(i, Standing.SUSPICIOUS)) for i in range(3)]
    storm.append(asyncio.ensure_future(storm_check(3, Standing.UNKNOWN)))
    await asyncio.sleep(0)
    assert await world.login("erin", WRONG, ELSEWHERE) is ErrorCode.SERVICE_BUSY  # a newcomer
    await asyncio.gather(known_user(), *storm)

    assert order[:2] == ["storm-0", "dave"]  # behind the check running, ahead of all waiting
