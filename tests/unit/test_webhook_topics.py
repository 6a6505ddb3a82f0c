"""Event type filters read like the bus's topic bindings: * one segment, # any number."""

from __future__ import annotations

import pytest

from hypersdk_webhooks.core.topics import PatternError, check_patterns, matches

CASES = [
    ("#", "a.b.c", True),
    ("#", "a", True),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "ab", False),
    ("a.#", "b.a", False),
    ("#.c", "a.b.c", True),
    ("#.c", "c", True),
    ("#.c", "a.bc", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.x.y.c", True),
    ("a.#.c", "a.x.y.d", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("exporter.job.succeeded", "exporter.job.succeeded", True),
    ("exporter.job.succeeded", "exporter.job.succeededx", False),
    ("exporter.job", "exporter.jobs", False),
    ("a_b.c", "a_b.c", True),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), CASES)
def test_a_pattern_matches_like_a_topic_binding(pattern: str, key: str, expected: bool) -> None:
    assert matches(pattern, key) is expected


@pytest.mark.parametrize(
    "patterns",
    [[], ["A.b"], ["a..b"], ["a.b*"], ["a b"], [".a"], ["a."], ["a.(b)"], ["x" * 201], ["a"] * 33],
)
def test_what_is_not_a_pattern_is_refused(patterns: list[str]) -> None:
    with pytest.raises(PatternError):
        check_patterns(patterns)


def test_patterns_are_deduplicated_in_order() -> None:
    assert check_patterns(["b.#", "a.*", "b.#"]) == ("b.#", "a.*")
