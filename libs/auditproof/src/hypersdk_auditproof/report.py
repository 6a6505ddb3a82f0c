"""What a verification found: the stable problem codes, each problem, and the report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_PROBLEMS = 100
"""Problems listed in a report; the rest are only counted. Enough to see the extent."""


class Code(StrEnum):
    """The stable problem codes: tools match on these, never on messages."""

    MALFORMED = "malformed"
    ENTRY_EDITED = "entry_edited"
    ENTRIES_MISSING = "entries_missing"
    ENTRY_INSERTED = "entry_inserted"
    ENTRIES_REORDERED = "entries_reordered"
    CHAIN_BROKEN = "chain_broken"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    LOG_TRUNCATED = "log_truncated"
    CHECKPOINT_SIGNATURE_INVALID = "checkpoint_signature_invalid"
    CHECKPOINT_UNKNOWN_KEY = "checkpoint_unknown_key"
    CHECKPOINTS_INCONSISTENT = "checkpoints_inconsistent"
    CHECKPOINT_WRONG_ORIGIN = "checkpoint_wrong_origin"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle, where it was found, and what it means."""

    code: str
    sequence: int | None
    message: str
    line: int | None = None
    """The bundle line it was found on (None for a witnessed checkpoint or the end of input)."""

    def to_json(self) -> dict[str, Any]:
        """The problem as a JSON object."""
        return {
            "code": str(self.code),
            "sequence": self.sequence,
            "line": self.line,
            "message": self.message,
        }


@dataclass(frozen=True)
class Report:
    """The outcome of verifying a bundle."""

    valid: bool
    """No problem at all."""
    entries: int
    """Well-formed entry lines read."""
    first_sequence: int | None
    """Lowest sequence of an entry that found its place (an inserted entry does not count)."""
    last_sequence: int | None
    """Highest such sequence."""
    checkpoints: int
    """Checkpoints read from the bundle and given as witnessed, trusted or not."""
    latest_checkpoint: int | None
    """Size of the newest checkpoint with a valid signature by a trusted key."""
    keys_from_bundle: bool
    """The bundle's own keys were trusted: it agrees with itself, nothing more."""
    problems: tuple[Problem, ...]
    """The first :data:`MAX_PROBLEMS` problems, in the order they were found."""
    problems_not_listed: int = 0
    """Problems found beyond :data:`MAX_PROBLEMS`, counted but not listed."""

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object."""
        return {
            "valid": self.valid,
            "entries": self.entries,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "checkpoints": self.checkpoints,
            "latest_checkpoint": self.latest_checkpoint,
            "keys_from_bundle": self.keys_from_bundle,
            "problems": [problem.to_json() for problem in self.problems],
            "problems_not_listed": self.problems_not_listed,
        }
