"""Brute-force protection against the real stack: counters in PostgreSQL shared by replicas.

Increasing delays then a lockout per user name (429 with Retry-After), a lockout per client
address, admin unlock, both audited; two throttles on separate connection pools (two identity
replicas) racing on one counter agree; an unknown user costs as much as a wrong password; only
a good login trusts its user name and address pair, a bounded number per name (decision 0039).
Client addresses come from X-Forwarded-For (the test stack trusts 127.0.0.1 as a proxy), so
these tests never lock 127.0.0.1 for the others.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from hypersdk_contracts.envelope import RequestContext
from hypersdk_identity.adapters.outbound.postgres import PostgresThrottleStore, PostgresTrustStore
from hypersdk_identity.core.throttle import LoginThrottle, LoginThrottledError, ThrottleRule
from hypersdk_kit.database import Database, create_pool
from hypersdk_kit.memory import InMemoryUnitOfWork

from .conftest import ADMIN_PASSWORD, Stack


def _address() -> str:
    """A client address of its own (IPv6 documentation prefix)."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


def _new_user(stack: Stack, admin: str) -> tuple[str, str]:
    username, password = f"lock-{secrets.token_hex(4)}", f"lockout-{secrets.token_hex(8)}"
    status, body, _ = stack.api.call(
        "POST", "/api/v1/users", {"username": username, "password": password}, token=admin
    )
    assert status == 201, body
    return username, password


def _login(
    stack: Stack, username: str, password: str, address: str
) -> tuple[int, Any, dict[str, str]]:
    return stack.api.call(
        "POST",
        "/api/v1/auth/login",
        {"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )


def _wait_for_audit(stack: Stack, token: str, predicate: Any) -> list[dict[str, Any]]:
    for _ in range(75):
        entries = stack.api.recent_audit(token)
        found = [e for e in entries if predicate(e)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("not audited in 15 s")


def test_delays_then_a_lockout_then_an_admin_unlock(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username, password = _new_user(stack, admin)
    address = _address()

    statuses = [_login(stack, username, "wrong-password-123", address)[0] for _ in range(3)]
    delayed = _login(stack, username, password, address)
    assert statuses == [401, 401, 401]  # two free failures, then the one that starts delays
    assert delayed[0] == 429
    assert delayed[1]["error"]["code"] == "rate_limited"
    assert delayed[2]["retry-after"] == "1"
    time.sleep(1.1)
    assert _login(stack, username, "wrong-password-123", address)[0] == 401
    assert int(_login(stack, username, password, address)[2]["retry-after"]) == 2
    time.sleep(2.1)
    assert _login(stack, username, "wrong-password-123", address)[0] == 401

    # Five failures within two minutes: locked for five minutes, from any address.
    status, body, headers = _login(stack, username, password, _address())
    assert status == 429, body
    assert 290 <= int(headers["retry-after"]) <= 300
    status, shown, _ = stack.api.call("GET", f"/api/v1/users/{username}", token=admin)
    assert shown["user"]["locked_until"] is not None
    rows = stack.db(
        "SELECT failures, locked_until FROM identity.login_throttle WHERE kind = 'username'"
        " AND key = $1",
        username,
    )
    assert rows[0]["failures"] == 5
    assert rows[0]["locked_until"] > datetime.now(UTC)
    locked = _wait_for_audit(
        stack,
        admin,
        lambda e: e["action"] == "auth.lockout" and e["resource"] == f"user/{username}",
    )
    assert locked[0]["source_ip"] == address

    # An admin lifts it: the right password works at once.
    assert stack.api.call("POST", f"/api/v1/users/{username}/unlock", token=admin)[0] == 204
    assert _login(stack, username, password, address)[0] == 200
    unlocked = _wait_for_audit(
        stack, admin, lambda e: e["action"] == "auth.unlock" and e["resource"] == f"user/{username}"
    )
    assert unlocked[0]["user"] == "admin"
    throttled = _wait_for_audit(
        stack,
        admin,
        lambda e: (
            e["action"] == "auth.login" and e["result"] in ("failure: throttled", "failure: locked")
        ),
    )
    assert throttled


def test_many_names_from_one_address_lock_the_address(stack: Stack) -> None:
    address, elsewhere = _address(), _address()
    admin = stack.api.login("admin", ADMIN_PASSWORD)

    statuses = [
        _login(stack, f"spray-{index}-{secrets.token_hex(2)}", "Summer2024!!", address)[0]
        for index in range(20)
    ]
    blocked = _login(stack, "admin", ADMIN_PASSWORD, address)
    allowed = _login(stack, "admin", ADMIN_PASSWORD, elsewhere)

    assert statuses == [401] * 20
    assert blocked[0] == 429
    assert int(blocked[2]["retry-after"]) > 200
    assert allowed[0] == 200
    locked = _wait_for_audit(
        stack,
        admin,
        lambda e: e["action"] == "auth.lockout" and e["resource"] == f"address/{address}",
    )
    assert locked


def test_an_unknown_user_costs_as_much_as_a_wrong_password(stack: Stack) -> None:
    known_user, _ = _new_user(stack, stack.api.login("admin", ADMIN_PASSWORD))

    def timed(username: str) -> float:
        started = time.perf_counter()
        status, _, _ = _login(stack, username, "wrong-password-123", _address())
        assert status == 401
        return time.perf_counter() - started

    known = [timed(known_user) for _ in range(2)]
    unknown = [timed(f"ghost-{secrets.token_hex(4)}") for _ in range(4)]

    # Both pay one bcrypt check (~240 ms at cost 12); without the dummy check an unknown
    # user would answer in a few milliseconds.
    assert min(unknown) > 0.15
    assert statistics.median(unknown) > 0.5 * statistics.median(known)


async def test_two_replicas_agree_on_one_counter(stack: Stack) -> None:
    rule = ThrottleRule(max_failures=5, window_seconds=120, lockout_seconds=300)
    pools = [await create_pool(stack.database_url, size=5) for _ in range(2)]
    events = InMemoryUnitOfWork(service="identity")
    replicas = [
        LoginThrottle(
            store=PostgresThrottleStore(Database(pool)),
            username_rule=rule,
            address_rule=None,
            uow=events,
            clock=lambda: datetime.now(UTC),
        )
        for pool in pools
    ]
    username = f"race-{secrets.token_hex(4)}"
    context = RequestContext(source_ip="192.0.2.99")

    async def attempt(index: int) -> bool:
        replica = replicas[index % 2]
        try:
            admission = await replica.admit(username, None, context)
        except LoginThrottledError:
            return False
        await replica.failed(admission, context)
        return True

    try:
        admitted = await asyncio.gather(*(attempt(i) for i in range(30)))
    finally:
        for pool in pools:
            await pool.close()

    # However the 30 attempts interleave over two pools, exactly five reach a password check,
    # and exactly one lockout is published.
    assert sum(admitted) == 5
    assert [e.routing_key for e in events.events] == ["identity.account.locked"]
    row = stack.db(
        "SELECT failures, locked_until FROM identity.login_throttle WHERE key = $1", username
    )[0]
    assert row["failures"] == 5
    assert row["locked_until"] is not None


def test_a_good_login_trusts_its_name_and_address_and_nothing_else(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username, password = _new_user(stack, admin)
    home, elsewhere = _address(), _address()
    ghost = f"ghost-{secrets.token_hex(4)}"

    assert _login(stack, username, password, home)[0] == 200
    assert _login(stack, username, "wrong-password-123", elsewhere)[0] == 401
    assert _login(stack, ghost, password, elsewhere)[0] == 401

    rows = stack.db(
        "SELECT username, address, trusted_until - now() AS left"
        " FROM identity.login_trust WHERE username = ANY($1::text[]) OR address = $2",
        [username, ghost],
        elsewhere,
    )
    assert [(row["username"], row["address"]) for row in rows] == [(username, home)]
    assert 6 * 86400 < rows[0]["left"].total_seconds() <= 7 * 86400  # the default week

    status, _, _ = stack.api.call("DELETE", f"/api/v1/users/{username}", token=admin)
    assert status == 204
    gone = "SELECT 1 FROM identity.login_trust WHERE username = $1"
    assert stack.db(gone, username) == []  # with the user


async def test_the_trust_store_keeps_a_bounded_number_of_addresses_per_name(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username, _ = _new_user(stack, admin)
    addresses = [_address() for _ in range(3)]
    pool = await create_pool(stack.database_url, size=2)
    store = PostgresTrustStore(Database(pool))
    now = datetime.now(UTC)
    try:
        for offset, address in enumerate(addresses):
            until = now + timedelta(seconds=60 + offset)
            await store.trust(username, address, until=until, keep=2)
        kept = [await store.trusted(username, address, now=now) for address in addresses]
        ended = await store.trusted(username, addresses[2], now=now + timedelta(seconds=62))
        assert await store.forget(username, address=addresses[1]) == 1
        swept = await store.sweep(now=now + timedelta(seconds=63))
    finally:
        await pool.close()

    assert kept == [False, True, True]  # the one whose trust ends first was dropped
    assert ended is False
    assert swept == 1
    assert stack.db("SELECT 1 FROM identity.login_trust WHERE username = $1", username) == []
