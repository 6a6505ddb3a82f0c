"""Collecting problems during a walk, before they become a :class:`~.report.Report`.

Only the first :data:`~.report.MAX_PROBLEMS` are kept; problems of one kind at consecutive
sequences merge into a run; a gap stays open to the end, since an entry arriving late turns a
missing entry into a reordered one.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypersdk_auditproof.report import MAX_PROBLEMS, Code, Problem, Report

_RUN_CODES = frozenset({Code.ENTRY_EDITED, Code.CHAIN_BROKEN, Code.ENTRIES_REORDERED})
"""Codes whose problems at consecutive sequences are reported once, as a run."""


@dataclass
class Record:
    """A problem while the walk may still extend, split or drop it."""

    code: Code
    sequence: int | None
    message: str
    line: int | None
    last: int | None = None
    """The last sequence of a run or of a gap; None for a single sequence."""

    def problem(self) -> Problem:
        """The finished problem, its message saying how far a run or gap reaches."""
        message = self.message
        if self.code == Code.ENTRIES_MISSING:
            message = _missing_message(self.sequence or 0, self.last or 0, message)
        elif self.last is not None and self.sequence is not None:
            count = self.last - self.sequence
            message += f"; so do the next {count} entries, up to sequence {self.last}"
        return Problem(self.code, self.sequence, message, self.line)


def _missing_message(first: int, last: int, context: str) -> str:
    if first == last:
        return f"sequence {first} is missing ({context})"
    return f"sequences {first} to {last} are missing ({last - first + 1} entries; {context})"


class Problems:
    """The problems found so far, capped, with runs coalesced and gaps kept open."""

    def __init__(self) -> None:
        self._records: list[Record] = []
        self.not_listed = 0

    def add(
        self, code: Code, sequence: int | None, message: str, line: int | None
    ) -> Record | None:
        """Record a problem (or extend a run); None once the limit is reached."""
        last = self._records[-1] if self._records else None
        if (
            code in _RUN_CODES
            and last is not None
            and last.code == code
            and sequence is not None
            and last.sequence is not None
            and (last.last or last.sequence) + 1 == sequence
        ):
            last.last = sequence
            return last
        if len(self._records) >= MAX_PROBLEMS:
            self.not_listed += 1
            return None
        record = Record(code, sequence, message, line)
        self._records.append(record)
        return record

    def gap(self, first: int, last: int, context: str, line: int) -> None:
        """Record sequences ``first`` to ``last`` as missing, open to late arrivals."""
        record = self.add(Code.ENTRIES_MISSING, first, context, line)
        if record is not None:
            record.last = last

    def fill(self, sequence: int) -> bool:
        """Take ``sequence`` out of an open gap; whether it was in one."""
        for position, record in enumerate(self._records):
            if record.code != Code.ENTRIES_MISSING or record.sequence is None:
                continue
            first, last = record.sequence, record.last or record.sequence
            if first <= sequence <= last:
                self._records[position : position + 1] = [
                    Record(record.code, start, record.message, record.line, end)
                    for start, end in ((first, sequence - 1), (sequence + 1, last))
                    if start <= end
                ]
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self._records) or self.not_listed > 0

    def report(
        self,
        *,
        keys_from_bundle: bool,
        entries: int = 0,
        first: int | None = None,
        last: int | None = None,
        checkpoints: int = 0,
        latest: int | None = None,
    ) -> Report:
        """The report of a verification that found these problems."""
        return Report(
            valid=not self,
            entries=entries,
            first_sequence=first,
            last_sequence=last,
            checkpoints=checkpoints,
            latest_checkpoint=latest,
            keys_from_bundle=keys_from_bundle,
            problems=tuple(record.problem() for record in self._records),
            problems_not_listed=self.not_listed,
        )
