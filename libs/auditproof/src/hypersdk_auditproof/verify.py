"""Verify an export bundle: every hash, link and signed checkpoint, streaming.

The walk keeps O(log n) state however long the log is: the chain's cursor, the Merkle tree's
compact range, at most one entry that arrived ahead of its place, and at most one pair of
entries competing for the same sequence. Every problem is located as precisely as the evidence
allows, and the walk re-synchronises on each entry's own fields so that one tampering does not
drown the report in its consequences.

What each check catches:

- an entry's hash recomputed from its canonical form: an edited entry;
- sequence numbers: removed, inserted, duplicated or moved entries;
- ``prev_hash`` links: a removal or insertion hidden by renumbering;
- the Merkle root and chain head at every signed checkpoint: a rewritten stretch, even one whose
  hashes and links were all recomputed;
- the newest checkpoint, from the bundle or from the caller (``witnessed``): a cut tail.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hypersdk_auditproof import _json
from hypersdk_auditproof._problems import Problems
from hypersdk_auditproof._walk import Walk
from hypersdk_auditproof.bundle import Header, parse_entry, parse_header
from hypersdk_auditproof.checkpoint import SignedCheckpoint, key_id
from hypersdk_auditproof.report import MAX_PROBLEMS, Code, Problem, Report

__all__ = ["MAX_PROBLEMS", "Code", "Problem", "Report", "verify_bundle"]


def _numbered_text(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | None]]:
    """Each line without its line ending, numbered from 1; None for a line that is not UTF-8."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None
                continue
        else:
            text = raw
        yield number, text.removesuffix("\n").removesuffix("\r")


def _without_trailing_blanks(
    numbered: Iterator[tuple[int, str | None]], problems: Problems
) -> Iterator[tuple[int, str | None]]:
    """Blank lines at the very end are tolerated (a trailing newline split off); others are not."""
    blank: int | None = None
    for number, text in numbered:
        if text is not None and not text.strip():
            blank = number if blank is None else blank
            continue
        if blank is not None:
            problems.add(Code.MALFORMED, None, f"line {blank}: a blank line", blank)
            blank = None
        yield number, text


def verify_bundle(
    lines: Iterable[str | bytes],
    *,
    keys: Mapping[str, Ed25519PublicKey] | None = None,
    witnessed: Sequence[SignedCheckpoint] = (),
) -> Report:
    """Verify a bundle read line by line, in O(log n) memory for n entries.

    ``keys`` are the public keys the caller trusts (re-indexed by their own key ids); without
    them the bundle's header keys are used and the report says so, which proves only that the
    bundle agrees with itself. ``witnessed`` are checkpoints obtained elsewhere: they are checked
    like the bundle's, so cutting the newest entries and the newest checkpoints is still caught.
    """
    problems = Problems()
    numbered = _without_trailing_blanks(_numbered_text(lines), problems)
    header = _read_header(next(numbered, None), problems)
    if header is None:
        return problems.report(keys_from_bundle=keys is None)
    trusted = (
        dict(header.keys)
        if keys is None
        else {key_id(public_key): public_key for public_key in keys.values()}
    )
    walk = Walk(header, trusted, witnessed, problems)
    for number, text in numbered:
        _read_line(walk, number, text)
    walk.finish()
    return walk.report(keys_from_bundle=keys is None)


def _read_header(first: tuple[int, str | None] | None, problems: Problems) -> Header | None:
    if first is None:
        problems.add(Code.MALFORMED, None, "the bundle is empty: it has no header line", None)
        return None
    number, text = first
    try:
        if text is None:
            raise ValueError("the line is not UTF-8")
        if number != 1:
            raise ValueError("the header must be the first line")
        return parse_header(_json.loads(text))
    except ValueError as error:
        problems.add(Code.MALFORMED, None, f"line {number}: not a bundle header: {error}", number)
        return None


def _read_line(walk: Walk, number: int, text: str | None) -> None:
    try:
        if text is None:
            raise ValueError("the line is not UTF-8")
        value = _json.loads(text)
    except ValueError as error:
        walk.problems.add(Code.MALFORMED, None, f"line {number}: not JSON: {error}", number)
        walk.unreadable_line = number
        return
    kind = value.get("kind") if isinstance(value, dict) else None
    try:
        if kind == "entry":
            entry = parse_entry(value)
        elif kind == "checkpoint":
            walk.add_checkpoint(SignedCheckpoint.from_json(value), number)
            return
        else:
            raise ValueError("a line after the header is an object of kind entry or checkpoint")
    except ValueError as error:
        _malformed(walk, number, value, error)
        return
    walk.on_entry(entry, number)


def _malformed(walk: Walk, number: int, value: Any, error: ValueError) -> None:
    """Report a line that cannot be used, keeping the walk in step if it says its sequence."""
    sequence = value.get("sequence") if isinstance(value, dict) else None
    if (
        isinstance(sequence, int)
        and not isinstance(sequence, bool)
        and sequence > 0
        and value.get("kind") == "entry"
    ):
        walk.problems.add(
            Code.MALFORMED, sequence, f"line {number} (sequence {sequence}): {error}", number
        )
        walk.on_unreadable_entry(sequence, value.get("hash"))
        return
    walk.problems.add(Code.MALFORMED, None, f"line {number}: {error}", number)
    walk.unreadable_line = number
