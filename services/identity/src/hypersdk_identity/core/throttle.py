"""Login throttling: failures counted per user name and per client address, in shared state.

Every attempt is charged as a failure *before* the password is checked (compare-and-swap on
the stored counter), and refunded when it succeeds. So parallel guesses cannot slip past the
counter while bcrypt or PAM is busy, and every identity replica sees the same numbers.

Per user name: the first ``free_failures`` failures cost nothing (a typo, then a retype); after
that each attempt must wait ``delay_base * 2^n`` seconds after the last failure; ``max_failures``
within ``window_seconds`` lock the name for ``lockout_seconds``. Per client address: the same
lockout with its own (higher) threshold, no delays. Unknown user names are counted exactly like
known ones, so a 429 says nothing about whether a user exists.

Admission also gives the attempt its :class:`Standing` for the password check (decision 0039):
``TRUSTED`` when this user name logged in from this address recently (a pair recorded only by a
login with the right password, expiring, a bounded number of addresses per name),
``SUSPICIOUS`` when the address failed recently or came back before the ``Retry-After`` of a
``service_busy`` refusal (such an early return makes it suspicious for the window, without
counting as a failure: a shared address is never locked out for it),
``UNKNOWN`` otherwise. Nothing in it depends on whether the user
exists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import AccountLocked, AccountUnlocked
from hypersdk_identity.core.models import Standing, ThrottleKind, ThrottleState
from hypersdk_identity.ports.outbound import ThrottleStore, TrustStore
from hypersdk_kit.ports import UnitOfWork

MAX_SWAPS = 50  # compare-and-swap retries before giving up on a counter under heavy contention
# An attempt this much before the Retry-After it was given still counts as patient: replicas'
# clocks differ a little (a client sleeps from when the answer reached it, later than the
# refusal was decided, so it needs no more). A storm retrying after 100 ms is well inside.
PATIENCE_TOLERANCE = timedelta(milliseconds=50)


@dataclass(frozen=True)
class TrustRule:
    """How long a successful login trusts its user name and address pair, and for how many."""

    seconds: int
    addresses_per_user: int


@dataclass(frozen=True)
class ThrottleRule:
    """How failures of one kind are counted and punished."""

    max_failures: int
    window_seconds: int
    lockout_seconds: int
    free_failures: int = 0
    delay_base_seconds: int = 0
    delay_max_seconds: int = 0

    def delay_after(self, failures: int) -> int:
        """Seconds an attempt must wait after the last of ``failures`` failures."""
        if self.delay_base_seconds <= 0 or failures <= self.free_failures:
            return 0
        steps = failures - self.free_failures - 1
        return int(min(self.delay_base_seconds * 2**steps, self.delay_max_seconds))

    def failures_at(self, state: ThrottleState, now: datetime) -> int:
        """Failures still inside the counting window at ``now``."""
        if state.window_started_at is None:
            return 0
        if now >= state.window_started_at + timedelta(seconds=self.window_seconds):
            return 0
        return state.failures

    def wait_seconds(self, state: ThrottleState, now: datetime) -> tuple[int, bool] | None:
        """``(seconds, locked)`` an attempt must wait at ``now``, or None if it may go ahead."""
        if state.locked_until is not None and now < state.locked_until:
            return _ceil_seconds(state.locked_until - now), True
        failures = self.failures_at(state, now)
        if failures >= self.max_failures:
            # Attempts already in flight use up the budget; they lock or reset it shortly.
            assert state.window_started_at is not None
            window_end = state.window_started_at + timedelta(seconds=self.window_seconds)
            return _ceil_seconds(window_end - now), False
        delay = self.delay_after(failures)
        if delay and state.last_failure_at is not None:
            ready_at = state.last_failure_at + timedelta(seconds=delay)
            if now < ready_at:
                return _ceil_seconds(ready_at - now), False
        return None

    def charge(self, state: ThrottleState, now: datetime) -> ThrottleState:
        """Count one attempt as a failure in advance (refunded if it succeeds)."""
        if self.failures_at(state, now):
            failures, started = state.failures + 1, state.window_started_at
        else:
            failures, started = 1, now
        locked_until = state.locked_until
        if locked_until is not None and locked_until <= now:
            locked_until = None
        return dataclasses.replace(
            state,
            failures=failures,
            window_started_at=started,
            last_failure_at=now,
            locked_until=locked_until,
        )


def _ceil_seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


class LoginThrottledError(Exception):
    """A login attempt must wait; ``locked`` when a lockout (not just a delay) is in force."""

    def __init__(self, retry_after_seconds: int, *, locked: bool) -> None:
        super().__init__("login throttled")
        self.retry_after_seconds = retry_after_seconds
        self.locked = locked


@dataclass(frozen=True)
class Admission:
    """The charges one login attempt made; settle them with ``succeeded`` or ``failed``.

    ``username`` and ``address`` are the counters charged (``address`` None when addresses are
    not counted); ``name`` and ``source`` are the user name as typed and the client address,
    the pair that trust is recorded for.
    """

    username: str
    address: str | None
    name: str = ""
    source: str | None = None
    standing: Standing = Standing.UNKNOWN
    impatient: bool = False
    """The address came back before the ``Retry-After`` of its last ``service_busy``."""


class LoginThrottle:
    """Admits, counts and locks out login attempts; publishes lockouts and unlocks."""

    def __init__(
        self,
        *,
        store: ThrottleStore,
        username_rule: ThrottleRule,
        address_rule: ThrottleRule | None,
        uow: UnitOfWork,
        clock: Callable[[], datetime],
        trust: TrustStore | None = None,
        trust_rule: TrustRule | None = None,
    ) -> None:
        self._store = store
        self._rules: dict[ThrottleKind, ThrottleRule | None] = {
            "username": username_rule,
            "address": address_rule,
        }
        self._uow = uow
        self._clock = clock
        self._trust = trust if trust_rule is not None and trust_rule.seconds > 0 else None
        self._trust_rule = trust_rule

    @staticmethod
    def username_key(username: str) -> str:
        """The counter key of a user name (case does not buy an attacker more guesses)."""
        return username.casefold()

    async def admit(self, username: str, address: str | None, context: RequestContext) -> Admission:
        """Charge the attempt to its address and name, or raise :class:`LoginThrottledError`.

        The admission carries the attempt's standing. It is decided from the address's counter
        and the trust of the (user name, address) pair only: an unknown user name gets exactly
        the standing of a known one with a wrong password.
        """
        admission = Admission(
            username=self.username_key(username),
            address=address if self._rules["address"] is not None else None,
            name=username,
            source=address,
        )
        standing = Standing.UNKNOWN
        if admission.address is not None:
            now = self._clock()
            before = await self._charge("address", admission.address, context)
            impatient = before.refused_until is not None and now < before.refused_until
            if impatient or self._rule("address").failures_at(before, now) > 0:
                standing = Standing.SUSPICIOUS
            admission = dataclasses.replace(admission, impatient=impatient)
        try:
            await self._charge("username", admission.username, context)
        except LoginThrottledError:
            if admission.address is not None:
                await self._refund("address", admission.address)
            raise
        # Looked up for every attempt, known user or not: the same work either way.
        if (
            address is not None
            and self._trust is not None
            and await self._trust.trusted(username, address, now=self._clock())
        ):
            standing = Standing.TRUSTED
        return dataclasses.replace(admission, standing=standing)

    async def succeeded(self, admission: Admission, *, username: str) -> None:
        """A good password resets the name's counter and refunds the address's charge.

        It also trusts the pair of ``username`` (the user's name as stored) and the address:
        the only way a pair becomes trusted.
        """
        await self._store.delete("username", admission.username)
        if admission.address is not None:
            await self._refund("address", admission.address)
        if admission.source is not None and self._trust is not None:
            assert self._trust_rule is not None
            await self._trust.trust(
                username,
                admission.source,
                until=self._clock() + timedelta(seconds=self._trust_rule.seconds),
                keep=self._trust_rule.addresses_per_user,
            )

    async def withdrawn(
        self, admission: Admission, context: RequestContext, *, retry_after_seconds: int
    ) -> None:
        """An attempt that checked no password (identity was busy) gives back its charges.

        The address is told to come back after ``retry_after_seconds``. One that came back
        sooner (a storm retries at once, a client that behaves waits) is suspicious until the
        address's window has passed without another early return: its later attempts wait
        behind everyone else's. It is not charged a failure: users behind one shared address
        (an office's NAT) each waiting out their own ``Retry-After`` look early to each other,
        and must not lock one another out (the 429 stays for wrong passwords).
        """
        await self._refund("username", admission.username)
        if admission.address is None:
            return
        now = self._clock()
        come_back_from = now + timedelta(seconds=retry_after_seconds) - PATIENCE_TOLERANCE
        if admission.impatient:
            window = timedelta(seconds=self._rule("address").window_seconds)
            come_back_from = max(come_back_from, now + window)
        await self._refund("address", admission.address, refused_until=come_back_from)

    async def failed(self, admission: Admission, context: RequestContext) -> None:
        """A refused attempt keeps its charge; lock what reached its threshold.

        A wrong password on a trusted pair ends that pair's trust: whoever shares the address
        gets one attempt at the trusted standing per good login, not a stream of them.
        """
        async with self._uow.transaction():
            await self._lock_if_due("username", admission.username, context)
            if admission.address is not None:
                await self._lock_if_due("address", admission.address, context)
            if (
                admission.standing is Standing.TRUSTED
                and admission.source is not None
                and self._trust is not None
            ):
                await self._trust.forget(admission.name, address=admission.source)

    async def forget_trust(self, username: str) -> None:
        """Trust no address of ``username`` any more (the user was disabled or deleted)."""
        if self._trust is not None:
            await self._trust.forget(username)

    async def locked_until(self, username: str) -> datetime | None:
        """When a lockout of ``username`` ends, if one is in force."""
        state = await self._store.get("username", self.username_key(username))
        if state is None or state.locked_until is None or state.locked_until <= self._clock():
            return None
        return state.locked_until

    async def unlock(self, username: str, context: RequestContext) -> bool:
        """Lift a lockout of ``username`` and forget its failures; whether one was in force."""
        async with self._uow.transaction():
            removed = await self._store.delete("username", self.username_key(username))
            if (
                removed is None
                or removed.locked_until is None
                or removed.locked_until <= self._clock()
            ):
                return False
            await self._uow.record(
                AccountUnlocked(username=removed.key, reason="admin"),
                subject=f"user/{removed.key}",
                context=context,
            )
        return True

    async def sweep(self) -> int:
        """Forget stale counters and expired lockouts (publishing the unlocks); how many ended."""
        now = self._clock()
        longest = max(rule.window_seconds for rule in self._rules.values() if rule is not None)
        async with self._uow.transaction():
            expired = await self._store.sweep(
                now=now, stale_before=now - timedelta(seconds=longest)
            )
            for state in expired:
                await self._publish_unlocked_on_expiry(state)
        if self._trust is not None:
            await self._trust.sweep(now=now)
        return len(expired)

    # ---- internals -----------------------------------------------------------------------------

    def _rule(self, kind: ThrottleKind) -> ThrottleRule:
        rule = self._rules[kind]
        assert rule is not None
        return rule

    async def _swap(
        self, kind: ThrottleKind, key: str, change: Callable[[ThrottleState], ThrottleState | None]
    ) -> tuple[ThrottleState, ThrottleState] | None:
        """Apply ``change`` with compare-and-swap; ``(before, after)``, or None if unchanged."""
        for _ in range(MAX_SWAPS):
            before = await self._store.get(kind, key) or ThrottleState(kind=kind, key=key)
            after = change(before)
            if after is None:
                return None
            if await self._store.save(after):
                return before, after
        raise ServiceError(
            ErrorCode.UPSTREAM_UNAVAILABLE, "Too many logins at once; try again shortly."
        )

    async def _charge(self, kind: ThrottleKind, key: str, context: RequestContext) -> ThrottleState:
        """Charge one attempt; the counter as it was before."""
        rule = self._rule(kind)
        now = self._clock()

        def charge(state: ThrottleState) -> ThrottleState:
            wait = rule.wait_seconds(state, now)
            if wait is not None:
                seconds, locked = wait
                raise LoginThrottledError(seconds, locked=locked)
            return rule.charge(state, now)

        async with self._uow.transaction():
            swapped = await self._swap(kind, key, charge)
            assert swapped is not None
            before, _ = swapped
            if before.locked_until is not None and before.locked_until <= now:
                # The lockout had expired and this attempt cleared it before the sweeper did.
                await self._publish_unlocked_on_expiry(before, context)
        return before

    async def _refund(
        self, kind: ThrottleKind, key: str, *, refused_until: datetime | None = None
    ) -> None:
        def refund(state: ThrottleState) -> ThrottleState | None:
            if state.version == 0 or (state.failures == 0 and refused_until is None):
                return None
            later = [at for at in (refused_until, state.refused_until) if at is not None]
            return dataclasses.replace(
                state,
                failures=max(0, state.failures - 1),
                refused_until=max(later, default=None),  # never shortens an early return's
            )

        await self._swap(kind, key, refund)

    async def _lock_if_due(self, kind: ThrottleKind, key: str, context: RequestContext) -> None:
        rule = self._rule(kind)
        now = self._clock()

        def lock(state: ThrottleState) -> ThrottleState | None:
            if state.locked_until is not None and state.locked_until > now:
                return None
            if rule.failures_at(state, now) < rule.max_failures:
                return None
            return dataclasses.replace(
                state, locked_until=now + timedelta(seconds=rule.lockout_seconds)
            )

        swapped = await self._swap(kind, key, lock)
        if swapped is None:
            return
        _, locked = swapped
        assert locked.locked_until is not None
        await self._uow.record(
            AccountLocked(
                username=key if kind == "username" else None,
                address=key if kind == "address" else None,
                failures=locked.failures,
                locked_until=locked.locked_until,
            ),
            subject=f"user/{key}" if kind == "username" else f"address/{key}",
            context=context,
        )

    async def _publish_unlocked_on_expiry(
        self, state: ThrottleState, context: RequestContext | None = None
    ) -> None:
        await self._uow.record(
            AccountUnlocked(
                username=state.key if state.kind == "username" else None,
                address=state.key if state.kind == "address" else None,
                reason="expired",
            ),
            subject=f"user/{state.key}" if state.kind == "username" else f"address/{state.key}",
            # The request that noticed the expiry (its seal too), acted on by the system.
            context=(context or RequestContext()).model_copy(update={"actor": "system"}),
        )
