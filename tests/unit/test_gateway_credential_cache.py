"""Gateway: the credential cache on its own, and the backend that empties it on revocations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import ListJobsRequest, Principal, RpcRequest
from hypersdk_gateway.core.credentials import (
    REVOKING_QUEUES,
    CredentialCache,
    InvalidatingBackend,
    credential_key,
)
from hypersdk_gateway.ports.outbound import Backend

WALL = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ALICE = Principal(username="alice", session_id="s-1", assertion="v1.a.b")
KEY = credential_key("session:hsdk_s_token")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_cache(clock: Clock, *, ttl: float = 10, max_entries: int = 100) -> CredentialCache:
    cache = CredentialCache(
        ttl_seconds=ttl, max_entries=max_entries, clock=clock, wall_clock=lambda: WALL
    )
    cache.resume()
    return cache


def test_the_key_is_a_digest_not_the_credential() -> None:
    key = credential_key("session:hsdk_s_secret")
    assert b"hsdk_s_secret" not in key
    assert len(key) == 32
    assert key != credential_key("apikey:hsdk_s_secret")


def test_a_cache_serves_nothing_until_the_revocation_feed_is_live() -> None:
    cache = CredentialCache(ttl_seconds=10, clock=Clock())

    cache.remember_principal(KEY, ALICE, generation=cache.generation)

    assert not cache.live
    assert cache.principal(KEY) is None
    assert len(cache) == 0


def test_a_principal_is_served_until_its_time_is_up() -> None:
    clock = Clock()
    cache = live_cache(clock)
    cache.remember_principal(KEY, ALICE, generation=cache.generation)

    clock.now += 9.9
    assert cache.principal(KEY) == ALICE
    clock.now += 0.1
    assert cache.principal(KEY) is None
    assert len(cache) == 0


def test_a_credential_that_ends_sooner_is_kept_no_longer_than_it_works() -> None:
    clock = Clock()
    cache = live_cache(clock)
    ending = ALICE.model_copy(update={"valid_until": WALL + timedelta(seconds=3)})
    ended = ALICE.model_copy(update={"valid_until": WALL})
    other = credential_key("session:other")

    cache.remember_principal(KEY, ending, generation=cache.generation)
    cache.remember_principal(other, ended, generation=cache.generation)

    clock.now += 2.9
    assert cache.principal(KEY) == ending
    clock.now += 0.1
    assert cache.principal(KEY) is None
    assert cache.principal(other) is None


def test_an_answer_that_raced_with_a_revocation_is_not_kept() -> None:
    cache = live_cache(Clock())
    before = cache.generation  # read before asking identity

    cache.invalidate()  # a revocation arrives while identity is answering
    cache.remember_principal(KEY, ALICE, generation=before)

    assert cache.principal(KEY) is None


def test_grants_belong_to_their_credential_and_go_with_it() -> None:
    cache = live_cache(Clock())
    cache.remember_principal(KEY, ALICE, generation=cache.generation)
    cache.remember_grant(KEY, "jobs:view", "grant-1", generation=cache.generation)
    stranger = credential_key("session:stranger")
    cache.remember_grant(stranger, "jobs:view", "grant-2", generation=cache.generation)

    assert cache.grant(KEY, "jobs:view") == "grant-1"
    assert cache.grant(KEY, "vms:export") is None
    assert cache.grant(stranger, "jobs:view") is None

    cache.invalidate()
    assert cache.grant(KEY, "jobs:view") is None


def test_a_grant_that_raced_with_a_revocation_is_not_kept() -> None:
    cache = live_cache(Clock())
    cache.remember_principal(KEY, ALICE, generation=cache.generation)
    before = cache.generation
    cache.invalidate()
    cache.remember_principal(KEY, ALICE, generation=cache.generation)

    cache.remember_grant(KEY, "jobs:view", "stale", generation=before)

    assert cache.grant(KEY, "jobs:view") is None


def test_suspending_forgets_everything_and_resuming_starts_empty() -> None:
    cache = live_cache(Clock())
    cache.remember_principal(KEY, ALICE, generation=cache.generation)

    cache.suspend()
    assert cache.principal(KEY) is None
    cache.resume()

    assert cache.principal(KEY) is None


def test_the_oldest_credentials_make_room_for_new_ones() -> None:
    cache = live_cache(Clock(), max_entries=2)
    keys = [credential_key(f"session:{n}") for n in range(3)]
    for key in keys:
        cache.remember_principal(key, ALICE, generation=cache.generation)

    assert len(cache) == 2
    assert cache.principal(keys[0]) is None
    assert cache.principal(keys[2]) == ALICE


def test_an_entry_is_due_for_refresh_once_past_half_its_life() -> None:
    clock = Clock()
    cache = live_cache(clock)
    cache.remember_principal(KEY, ALICE, generation=cache.generation)

    clock.now += 4.9
    assert not cache.should_refresh(KEY)
    clock.now += 0.1
    assert cache.should_refresh(KEY)
    assert not cache.should_refresh(KEY), "one refresh at a time"
    assert cache.principal(KEY) == ALICE


def test_a_refreshed_entry_keeps_young_grants_of_the_same_principal_only() -> None:
    clock = Clock()
    cache = live_cache(clock)
    cache.remember_principal(KEY, ALICE, generation=cache.generation)
    cache.remember_grant(KEY, "jobs:view", "old", generation=cache.generation)
    for refresh in range(6):  # refreshed every 6 s, each time before the entry ends
        clock.now += 6
        # The same principal; its new assertion does not make it another one.
        cache.remember_principal(
            KEY,
            ALICE.model_copy(update={"assertion": f"v1.{refresh}.x"}),
            generation=cache.generation,
        )
        if refresh == 4:
            cache.remember_grant(KEY, "vms:browse", "young", generation=cache.generation)

    assert cache.grant(KEY, "jobs:view") == "old"  # 36 s old
    clock.now += 9
    assert cache.grant(KEY, "jobs:view") is None  # 45 s old: policy is asked again
    assert cache.grant(KEY, "vms:browse") == "young"

    # A different principal for the same credential (e.g. other external roles): no grants.
    cache.remember_principal(
        KEY, ALICE.model_copy(update={"external_roles": ["operator"]}), generation=cache.generation
    )
    assert cache.grant(KEY, "vms:browse") is None


def test_forgetting_one_credential_respects_the_generation() -> None:
    cache = live_cache(Clock())
    cache.remember_principal(KEY, ALICE, generation=cache.generation)
    stale = cache.generation - 1

    cache.forget(KEY, generation=stale)
    assert cache.principal(KEY) == ALICE
    cache.forget(KEY, generation=cache.generation)
    assert cache.principal(KEY) is None


def test_a_zero_lifetime_turns_the_cache_off() -> None:
    cache = live_cache(Clock(), ttl=0)
    cache.remember_principal(KEY, ALICE, generation=cache.generation)

    assert not cache.live
    assert cache.principal(KEY) is None


class ScriptedBackend(Backend):
    """Answers every queue with ``None``, or raises what it was told to."""

    def __init__(self, error: ServiceError | None = None) -> None:
        self.error = error

    async def ask(self, queue: str, request: RpcRequest) -> Any:
        if self.error is not None:
            raise self.error
        return None


REQUEST = ListJobsRequest(context=RequestContext(actor="root"))


@pytest.mark.parametrize("queue", sorted(REVOKING_QUEUES))
async def test_a_call_that_may_revoke_empties_the_cache(queue: str) -> None:
    cache = live_cache(Clock())
    cache.remember_principal(KEY, ALICE, generation=cache.generation)

    await InvalidatingBackend(ScriptedBackend(), cache).ask(queue, REQUEST)

    assert cache.principal(KEY) is None


async def test_a_revoking_call_that_failed_empties_the_cache_too() -> None:
    """A timed-out revocation may still have happened."""
    cache = live_cache(Clock())
    cache.remember_principal(KEY, ALICE, generation=cache.generation)
    timed_out = ScriptedBackend(ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, "No answer."))

    with pytest.raises(ServiceError):
        await InvalidatingBackend(timed_out, cache).ask(RpcQueue.IDENTITY_REVOKE_API_KEY, REQUEST)

    assert cache.principal(KEY) is None


async def test_reads_leave_the_cache_alone() -> None:
    cache = live_cache(Clock())
    cache.remember_principal(KEY, ALICE, generation=cache.generation)

    await InvalidatingBackend(ScriptedBackend(), cache).ask(RpcQueue.EXPORTER_LIST_JOBS, REQUEST)

    assert cache.principal(KEY) == ALICE
