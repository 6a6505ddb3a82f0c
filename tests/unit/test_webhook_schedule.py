"""The webhook retry schedule and the disable rule: exact delays, jitter bounds, the dead
letter after the last attempt, and the boundaries of disabling a failing endpoint."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hypersdk_webhooks.core.schedule import DisablePolicy, RetryPolicy

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAIVE = datetime(2026, 3, 1, 12, 0)  # noqa: DTZ001
DOCUMENTED = [
    timedelta(0),
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(hours=24),
]
NO_JITTER = RetryPolicy(jitter_ratio=0)


# The schedule


def test_without_jitter_each_attempt_waits_exactly_the_documented_delay() -> None:
    rng = random.Random(1)
    waits = []
    for attempts_made in range(len(DOCUMENTED)):
        at = NO_JITTER.next_attempt_at(attempts_made=attempts_made, now=T0, rng=rng)
        assert at is not None
        waits.append(at - T0)
    assert waits == DOCUMENTED


def test_the_first_attempt_is_immediate_even_with_jitter() -> None:
    for seed in range(50):
        assert RetryPolicy().next_attempt_at(attempts_made=0, now=T0, rng=random.Random(seed)) == T0


def test_after_the_last_attempt_the_message_is_dead_lettered() -> None:
    rng = random.Random(1)
    assert RetryPolicy().max_attempts == 11
    assert RetryPolicy().next_attempt_at(attempts_made=10, now=T0, rng=rng) is not None
    assert RetryPolicy().next_attempt_at(attempts_made=11, now=T0, rng=rng) is None
    assert RetryPolicy().next_attempt_at(attempts_made=500, now=T0, rng=rng) is None
    short = RetryPolicy(delays=(timedelta(0), timedelta(minutes=1)), jitter_ratio=0)
    assert short.next_attempt_at(attempts_made=1, now=T0, rng=rng) == T0 + timedelta(minutes=1)
    assert short.next_attempt_at(attempts_made=2, now=T0, rng=rng) is None


def test_the_schedule_spans_46_hours_42_minutes_and_35_seconds() -> None:
    assert RetryPolicy().total_span == timedelta(hours=46, minutes=42, seconds=35)
    assert RetryPolicy(delays=(timedelta(0),)).total_span == timedelta(0)
    assert RetryPolicy(delays=(timedelta(seconds=1), timedelta(seconds=2))).total_span == (
        timedelta(seconds=3)
    )


def test_the_wait_counts_from_the_time_given() -> None:
    later = T0 + timedelta(hours=5, seconds=17)
    at = NO_JITTER.next_attempt_at(attempts_made=4, now=later, rng=random.Random(0))
    assert at == later + timedelta(minutes=10)


def test_the_same_draw_gives_the_same_time() -> None:
    first = RetryPolicy().next_attempt_at(attempts_made=6, now=T0, rng=random.Random(42))
    again = RetryPolicy().next_attempt_at(attempts_made=6, now=T0, rng=random.Random(42))
    other = RetryPolicy().next_attempt_at(attempts_made=6, now=T0, rng=random.Random(43))
    assert first == again
    assert first != other


def test_jitter_stays_within_the_ratio_and_spreads_across_it() -> None:
    policy = RetryPolicy(jitter_ratio=0.2)
    for attempts_made in range(1, len(DOCUMENTED)):
        nominal = DOCUMENTED[attempts_made]
        factors = []
        for seed in range(400):
            at = policy.next_attempt_at(
                attempts_made=attempts_made, now=T0, rng=random.Random(seed)
            )
            assert at is not None
            factors.append((at - T0) / nominal)
        assert all(0.8 - 1e-6 <= factor <= 1.2 + 1e-6 for factor in factors)
        assert min(factors) < 0.82
        assert max(factors) > 1.18
        assert math.isclose(sum(factors) / len(factors), 1.0, abs_tol=0.02)


def test_a_large_jitter_never_makes_a_wait_negative() -> None:
    policy = RetryPolicy(delays=(timedelta(0), timedelta(seconds=1)), jitter_ratio=0.999)
    for seed in range(500):
        at = policy.next_attempt_at(attempts_made=1, now=T0, rng=random.Random(seed))
        assert at is not None
        assert T0 <= at <= T0 + timedelta(seconds=2)


@pytest.mark.parametrize(
    ("delays", "ratio", "message"),
    [
        ((), 0.2, "at least one"),
        ((timedelta(seconds=-1), timedelta(0)), 0.2, "negative"),
        ((timedelta(0), timedelta(minutes=5), timedelta(minutes=1)), 0.2, "decrease"),
        (tuple(DOCUMENTED), -0.1, "jitter_ratio"),
        (tuple(DOCUMENTED), 1.0, "jitter_ratio"),
        (tuple(DOCUMENTED), float("nan"), "jitter_ratio"),
    ],
)
def test_a_bad_retry_policy_is_refused(
    delays: tuple[timedelta, ...], ratio: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(delays=delays, jitter_ratio=ratio)


def test_equal_delays_are_allowed() -> None:
    flat = RetryPolicy(delays=(timedelta(minutes=1),) * 3, jitter_ratio=0)
    assert flat.next_attempt_at(attempts_made=2, now=T0, rng=random.Random(0)) == (
        T0 + timedelta(minutes=1)
    )


def test_a_negative_attempt_count_or_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy().next_attempt_at(attempts_made=-1, now=T0, rng=random.Random(0))
    with pytest.raises(ValueError, match="timezone-aware"):
        RetryPolicy().next_attempt_at(attempts_made=0, now=NAIVE, rng=random.Random(0))


def test_a_time_in_another_zone_keeps_its_zone() -> None:
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    at = NO_JITTER.next_attempt_at(attempts_made=1, now=paris, rng=random.Random(0))
    assert at == T0 + timedelta(seconds=5)
    assert at is not None
    assert at.utcoffset() == timedelta(hours=1)


# Disabling


@pytest.mark.parametrize(
    ("failing_for", "failures", "disabled"),
    [
        (timedelta(days=5), 10, True),
        (timedelta(days=30), 500, True),
        (timedelta(days=5) - timedelta(microseconds=1), 10, False),
        (timedelta(days=5), 9, False),
        (timedelta(days=30), 9, False),
        (timedelta(hours=1), 500, False),
        (timedelta(0), 0, False),
        (-timedelta(days=6), 10, False),  # failing_since ahead of a skewed clock
    ],
)
def test_an_endpoint_is_disabled_only_after_five_days_and_ten_failures(
    failing_for: timedelta, failures: int, disabled: bool
) -> None:
    now = T0 + timedelta(days=40)
    assert (
        DisablePolicy().should_disable(
            failing_since=now - failing_for, consecutive_failures=failures, now=now
        )
        is disabled
    )


def test_an_endpoint_not_failing_is_never_disabled() -> None:
    assert not DisablePolicy().should_disable(failing_since=None, consecutive_failures=1000, now=T0)


def test_the_disable_thresholds_are_the_callers_to_choose() -> None:
    policy = DisablePolicy(after=timedelta(hours=1), min_failures=3)
    assert policy.should_disable(
        failing_since=T0, consecutive_failures=3, now=T0 + timedelta(hours=1)
    )
    assert not policy.should_disable(
        failing_since=T0, consecutive_failures=2, now=T0 + timedelta(hours=1)
    )


def test_failing_since_is_compared_across_zones() -> None:
    tokyo = timezone(timedelta(hours=9))
    now = T0 + timedelta(days=5)
    assert DisablePolicy().should_disable(
        failing_since=T0.astimezone(tokyo), consecutive_failures=10, now=now
    )


def test_a_bad_disable_policy_or_input_is_refused() -> None:
    with pytest.raises(ValueError, match="min_failures"):
        DisablePolicy(min_failures=0)
    with pytest.raises(ValueError, match="negative"):
        DisablePolicy(after=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="negative"):
        DisablePolicy().should_disable(failing_since=T0, consecutive_failures=-1, now=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        DisablePolicy().should_disable(failing_since=T0, consecutive_failures=10, now=NAIVE)
    with pytest.raises(ValueError, match="timezone-aware"):
        DisablePolicy().should_disable(failing_since=NAIVE, consecutive_failures=10, now=T0)
