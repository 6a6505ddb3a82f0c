"""Event type filters: AMQP topic patterns over routing keys.

A pattern is dot-separated segments: a name (lower-case letters, digits, underscores), ``*``
(exactly one segment) or ``#`` (any number of segments, none included), as the bus's own
topic bindings read them, so a subscriber writes the same filter for a webhook as for an AMQP
binding.
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_PATTERNS = 32
MAX_PATTERN_LENGTH = 200
_SEGMENT = re.compile(r"[a-z0-9_]+|\*|#")


class PatternError(ValueError):
    """A filter that is not a topic pattern (the message says which and why)."""


def check_patterns(patterns: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The patterns, deduplicated in order, or PatternError."""
    if not patterns:
        raise PatternError("at least one event type filter is needed")
    if len(patterns) > MAX_PATTERNS:
        raise PatternError(f"at most {MAX_PATTERNS} event type filters")
    seen: dict[str, None] = {}
    for pattern in patterns:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise PatternError(f"a filter is longer than {MAX_PATTERN_LENGTH} characters")
        segments = pattern.split(".")
        if not all(_SEGMENT.fullmatch(segment) for segment in segments):
            raise PatternError(
                f"{pattern[:80]!r} is not a topic pattern: dot-separated names, * or #"
            )
        seen[pattern] = None
    return tuple(seen)


def matches(pattern: str, routing_key: str) -> bool:
    """Whether ``routing_key`` matches the topic ``pattern``."""
    return _compiled(pattern).fullmatch("." + routing_key) is not None


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    """The pattern over the key with a leading dot: each segment takes its own dot."""
    parts = {"#": r"(?:\.[^.]+)*", "*": r"\.[^.]+"}
    return re.compile(
        "".join(parts.get(segment, r"\." + re.escape(segment)) for segment in pattern.split("."))
    )


def matches_any(patterns: tuple[str, ...], routing_key: str) -> bool:
    """Whether any of ``patterns`` matches ``routing_key``."""
    return any(matches(pattern, routing_key) for pattern in patterns)
