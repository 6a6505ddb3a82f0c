"""Verifying export bundles: every kind of tampering is found, with its code and its place.

A real bundle is built with the library's own writers: 300 entries, a checkpoint every 50
entries signed with a fresh Ed25519 key. Each test tampers with a copy of its lines the way an
insider with write access to the database or the export would, and checks the report.
"""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hypersdk_auditproof.bundle import Genesis, checkpoint_line, entry_line, header_line
from hypersdk_auditproof.checkpoint import Checkpoint, SignedCheckpoint, key_id, sign
from hypersdk_auditproof.entries import GENESIS_HASH, canonical, entry_hash, entry_leaf
from hypersdk_auditproof.merkle import TreeBuilder
from hypersdk_auditproof.verify import MAX_PROBLEMS, Report, verify_bundle

ORIGIN = "hypersdk.test/audit"
T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SIZE = 300
EVERY = 50
KEY = Ed25519PrivateKey.generate()
TRUSTED = {key_id(KEY.public_key()): KEY.public_key()}


def stamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def make_entry(sequence: int, prev_hash: str) -> dict[str, Any]:
    """A deterministic entry: nulls, attribution from sequence 100 on, non-ASCII now and then."""
    entry: dict[str, Any] = {
        "sequence": sequence,
        "event_id": f"evt-{sequence:06d}",
        "timestamp": stamp(T0 + timedelta(seconds=sequence)),
        "user": None if sequence % 7 == 0 else f"user-{sequence % 5}",
        "action": ("identity.login.succeeded", "exporter.job.completed")[sequence % 2],
        "resource": None if sequence % 3 == 0 else f"job:{sequence}",
        "result": "success" if sequence % 11 else "failure \u2013 d\u00e9j\u00e0 vu",
        "source_ip": "192.0.2.7",
        "request_id": f"req-{sequence}",
        "producer": "exporter" if sequence >= 100 else None,
        "received_at": stamp(T0 + timedelta(seconds=sequence, milliseconds=3))
        if sequence >= 100
        else None,
        "prev_hash": prev_hash,
    }
    entry["hash"] = entry_hash(canonical(entry))
    return entry


@dataclass(frozen=True)
class Log:
    """A genuine log and what the platform signed about it."""

    entries: list[dict[str, Any]]
    checkpoints: list[SignedCheckpoint]
    frontiers: dict[int, list[bytes]]
    """The Merkle tree's compact range after each size, for retention cuts."""


def make_log(
    size: int = SIZE, every: int = EVERY, key: Ed25519PrivateKey = KEY, origin: str = ORIGIN
) -> Log:
    tree = TreeBuilder()
    entries: list[dict[str, Any]] = []
    checkpoints: list[SignedCheckpoint] = []
    frontiers: dict[int, list[bytes]] = {0: []}
    prev_hash = GENESIS_HASH
    for sequence in range(1, size + 1):
        entry = make_entry(sequence, prev_hash)
        tree.append(entry_leaf(canonical(entry)))
        entries.append(entry)
        frontiers[sequence] = tree.frontier()
        prev_hash = entry["hash"]
        if sequence % every == 0:
            checkpoint = Checkpoint(
                origin, sequence, tree.root(), prev_hash, T0 + timedelta(seconds=sequence)
            )
            checkpoints.append(sign(checkpoint, key))
    return Log(entries, checkpoints, frontiers)


LOG = make_log()


def bundle(
    log: Log = LOG,
    *,
    genesis: Genesis | None = None,
    checkpoints: list[SignedCheckpoint] | None = None,
    keys: dict[str, Ed25519PublicKey] | None = None,
) -> list[str]:
    """A bundle as the exporter writes it (from the genesis on, if one is given)."""
    genesis = genesis or Genesis()
    lines = [header_line(ORIGIN, keys or TRUSTED, genesis)]
    lines += [checkpoint_line(signed) for signed in checkpoints or log.checkpoints]
    lines += [entry_line(entry) for entry in log.entries if entry["sequence"] > genesis.size]
    return lines


def at(lines: list[str], sequence: int) -> int:
    """Index (0-based) of the first entry line with ``sequence``."""
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        value = json.loads(line)
        if value.get("kind") == "entry" and value["sequence"] == sequence:
            return index
    raise AssertionError(f"no entry {sequence}")


def line_number(lines: list[str], sequence: int) -> int:
    return at(lines, sequence) + 1


def entry(lines: list[str], sequence: int) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(lines[at(lines, sequence)])
    return value


def rehashed(value: dict[str, Any]) -> dict[str, Any]:
    return value | {"hash": entry_hash(canonical(value))}


def verify(lines: Iterable[str | bytes], **options: Any) -> Report:
    options.setdefault("keys", TRUSTED)
    return verify_bundle(lines, **options)


def found(report: Report) -> list[tuple[str, int | None]]:
    return [(problem.code, problem.sequence) for problem in report.problems]


# -- the untouched bundle


def test_the_untouched_bundle_verifies() -> None:
    report = verify(bundle())
    assert report.valid, report.problems
    assert report == Report(
        valid=True,
        entries=SIZE,
        first_sequence=1,
        last_sequence=SIZE,
        checkpoints=SIZE // EVERY,
        latest_checkpoint=SIZE,
        keys_from_bundle=False,
        problems=(),
    )


def test_the_bundle_streams_from_any_iterable_of_text_or_bytes() -> None:
    lines = bundle()
    assert verify(iter(lines)).valid
    assert verify([line.encode() for line in lines]).valid
    assert verify([line.rstrip("\n") for line in lines]).valid
    assert verify([line.replace("\n", "\r\n") for line in lines]).valid
    assert verify([*lines, "", "\n"]).valid


def test_without_trusted_keys_the_bundles_own_are_used_and_the_report_says_so() -> None:
    report = verify_bundle(bundle())
    assert report.valid
    assert report.keys_from_bundle


def test_the_report_as_json() -> None:
    lines = bundle()
    del lines[at(lines, 7)]
    data = verify(lines).to_json()
    assert data["valid"] is False
    assert data["problems"] == [
        {
            "code": "entries_missing",
            "sequence": 7,
            "line": line_number(lines, 8),
            "message": f"sequence 7 is missing (the entry at line {line_number(lines, 8)}"
            " has sequence 8)",
        }
    ]
    json.dumps(data)


# -- entries


def test_an_edited_entry_is_found() -> None:
    lines = bundle()
    index = at(lines, 123)
    lines[index] = json.dumps(entry(lines, 123) | {"user": "mallory"}) + "\n"
    report = verify(lines)
    assert found(report) == [("entry_edited", 123)]
    assert report.problems[0].line == index + 1


def test_edits_to_consecutive_entries_are_one_problem() -> None:
    lines = bundle()
    for sequence in range(10, 20):
        lines[at(lines, sequence)] = json.dumps(entry(lines, sequence) | {"result": "ok"}) + "\n"
    report = verify(lines)
    assert found(report) == [("entry_edited", 10)]
    assert report.problems[0].message.endswith("so do the next 9 entries, up to sequence 19")


def forge_from(lines: list[str], sequence: int, **changes: Any) -> list[str]:
    """Edit one entry and recompute every hash and link after it: a consistent forged chain."""
    forged = list(lines)
    prev_hash = entry(forged, sequence - 1)["hash"] if sequence > 1 else GENESIS_HASH
    for index in range(at(forged, sequence), len(forged)):
        value = json.loads(forged[index]) | {"prev_hash": prev_hash}
        value = rehashed(value | (changes if value["sequence"] == sequence else {}))
        forged[index] = json.dumps(value) + "\n"
        prev_hash = value["hash"]
    return forged


def test_a_forged_chain_is_caught_by_the_next_checkpoint_and_located() -> None:
    report = verify(forge_from(bundle(), 123, user="mallory"))
    assert found(report) == [
        ("checkpoint_mismatch", 150),
        ("checkpoint_mismatch", 200),
        ("checkpoint_mismatch", 250),
        ("checkpoint_mismatch", 300),
    ]
    first = report.problems[0].message
    assert "Merkle root and head" in first
    assert "rewritten after sequence 100 and at or before sequence 150" in first
    assert "after sequence 100 and at or before sequence 300" in report.problems[-1].message


def test_a_forged_chain_from_the_first_entry_is_located_before_the_first_checkpoint() -> None:
    report = verify(forge_from(bundle(), 1, action="nothing.happened"))
    assert found(report)[0] == ("checkpoint_mismatch", 50)
    assert "rewritten at or before sequence 50" in report.problems[0].message


def test_a_forged_chain_just_after_a_checkpoint_is_located_after_it() -> None:
    report = verify(forge_from(bundle(), 151, user="mallory"))
    assert found(report)[0] == ("checkpoint_mismatch", 200)
    assert "after sequence 150 and at or before sequence 200" in report.problems[0].message


def test_a_deleted_entry_is_found() -> None:
    lines = bundle()
    del lines[at(lines, 123)]
    assert found(verify(lines)) == [("entries_missing", 123)]


def test_a_deleted_range_is_found() -> None:
    lines = bundle()
    del lines[at(lines, 120) : at(lines, 130)]
    report = verify(lines)
    assert found(report) == [("entries_missing", 120)]
    assert report.problems[0].message.startswith("sequences 120 to 129 are missing (10 entries")


def test_a_deleted_range_across_a_checkpoint_is_found() -> None:
    lines = bundle()
    del lines[at(lines, 140) : at(lines, 160)]
    assert found(verify(lines)) == [("entries_missing", 140)]


def test_the_first_entries_deleted_are_found() -> None:
    lines = bundle()
    del lines[at(lines, 1) : at(lines, 4)]
    assert found(verify(lines)) == [("entries_missing", 1)]


def test_a_deletion_hidden_by_renumbering_breaks_the_chain() -> None:
    lines = bundle()
    del lines[at(lines, 123)]
    for index in range(at(lines, 124), len(lines)):
        value = json.loads(lines[index])
        lines[index] = json.dumps(rehashed(value | {"sequence": value["sequence"] - 1}))
    report = verify(lines)
    assert found(report)[0] == ("chain_broken", 123)
    assert "prev_hash of sequence 123" in report.problems[0].message


def forged_entry(lines: list[str], sequence: int) -> str:
    """An entry claiming ``sequence`` that links to the real predecessor, hash and all."""
    prev_hash = entry(lines, sequence - 1)["hash"]
    value = make_entry(sequence, prev_hash) | {"user": "mallory", "action": "cover.up"}
    return entry_line(rehashed(value))


@pytest.mark.parametrize("after_the_real_one", [False, True])
def test_an_inserted_entry_is_found_and_told_apart_from_the_real_one(
    after_the_real_one: bool,
) -> None:
    lines = bundle()
    index = at(lines, 124) + (1 if after_the_real_one else 0)
    lines.insert(index, forged_entry(lines, 124))
    report = verify(lines)
    assert found(report) == [("entry_inserted", 124)]
    assert report.problems[0].line == index + 1
    assert f"the one at line {index + 1} was inserted" in report.problems[0].message


def test_an_entry_inserted_at_a_checkpoint_does_not_fool_the_checkpoint() -> None:
    lines = bundle()
    index = at(lines, 150)
    lines.insert(index, forged_entry(lines, 150))
    report = verify(lines)
    assert found(report) == [("entry_inserted", 150)]
    assert report.problems[0].line == index + 1


def test_the_last_entry_doubled_is_decided_by_the_checkpoint() -> None:
    lines = bundle()
    lines.insert(at(lines, SIZE), forged_entry(lines, SIZE))
    report = verify(lines)
    assert found(report) == [("entry_inserted", SIZE)]
    assert report.problems[0].line == at(lines, SIZE) + 1


def test_an_old_entry_repeated_later_is_inserted() -> None:
    lines = bundle()
    lines.insert(at(lines, 200), lines[at(lines, 50)])
    report = verify(lines)
    assert found(report) == [("entry_inserted", 50)]
    assert "again, after sequence 199" in report.problems[0].message


def test_an_entry_claiming_a_far_sequence_is_inserted() -> None:
    lines = bundle()
    lines.insert(at(lines, 100), entry_line(make_entry(5000, "ab" * 32)))
    report = verify(lines)
    assert found(report) == [("entry_inserted", 5000)]


def test_an_inserted_entry_renumbering_the_rest_breaks_the_chain() -> None:
    lines = bundle()
    lines.insert(at(lines, 124), forged_entry(lines, 124))
    for index in range(at(lines, 124) + 1, len(lines)):
        value = json.loads(lines[index])
        lines[index] = json.dumps(rehashed(value | {"sequence": value["sequence"] + 1}))
    assert found(verify(lines))[0] == ("chain_broken", 125)


def test_two_adjacent_entries_swapped_are_reordered() -> None:
    lines = bundle()
    first, second = at(lines, 123), at(lines, 124)
    lines[first], lines[second] = lines[second], lines[first]
    report = verify(lines)
    assert found(report) == [("entries_reordered", 124)]
    assert report.problems[0].line == first + 1


def test_two_distant_entries_swapped_are_reordered() -> None:
    lines = bundle()
    first, second = at(lines, 110), at(lines, 140)
    lines[first], lines[second] = lines[second], lines[first]
    report = verify(lines)
    assert found(report) == [("entries_reordered", 140), ("entries_reordered", 110)]
    assert [problem.line for problem in report.problems] == [first + 1, second + 1]


def test_an_entry_moved_later_is_reordered() -> None:
    lines = bundle()
    moved = lines.pop(at(lines, 60))
    lines.insert(at(lines, 90), moved)
    assert found(verify(lines)) == [("entries_reordered", 60)]


# -- the tail


def test_cutting_the_newest_entries_is_caught_by_the_newest_checkpoint() -> None:
    lines = bundle()
    report = verify(lines[: at(lines, 281)])
    assert found(report) == [("log_truncated", 281)]
    assert "sequences 281 to 300 were cut off" in report.problems[0].message
    assert report.last_sequence == 280


def test_cutting_entries_and_checkpoints_is_caught_by_a_witnessed_checkpoint() -> None:
    lines = bundle(checkpoints=LOG.checkpoints[:-1])
    lines = lines[: at(lines, 251)]
    assert verify(lines).valid  # the bundle alone agrees with itself
    report = verify(lines, witnessed=[LOG.checkpoints[-1]])
    assert found(report) == [("log_truncated", 251)]
    assert report.problems[0].message.startswith("a witnessed checkpoint covers size 300")
    assert report.latest_checkpoint == SIZE


def test_witnessed_checkpoints_inside_the_bundle_are_checked_too() -> None:
    lines = forge_from(bundle(checkpoints=LOG.checkpoints[:2]), 123, user="mallory")
    assert found(verify(lines)) == []  # no bundle checkpoint after 100: the forgery passes
    report = verify(lines, witnessed=LOG.checkpoints[2:4])
    assert found(report)[0] == ("checkpoint_mismatch", 150)


def test_entries_after_the_newest_checkpoint_are_vouched_for_by_the_chain_only() -> None:
    lines = bundle(make_log(size=SIZE + 10))
    forged = entry(lines, SIZE + 10) | {"user": "mallory"}
    lines[at(lines, SIZE + 10)] = json.dumps(rehashed(forged))
    report = verify(lines)
    assert report.valid
    assert report.latest_checkpoint == SIZE
    assert report.last_sequence == SIZE + 10


# -- checkpoints


def test_a_checkpoint_signed_by_another_key_is_not_trusted() -> None:
    impostor = Ed25519PrivateKey.generate()
    checkpoints = [*LOG.checkpoints]
    checkpoints[3] = sign(checkpoints[3].checkpoint, impostor)
    lines = bundle(checkpoints=checkpoints)
    report = verify(lines)
    assert found(report) == [("checkpoint_unknown_key", 200)]
    assert report.problems[0].line == 5
    assert key_id(impostor.public_key()) in report.problems[0].message


def resigned(lines: list[str], key: Ed25519PrivateKey) -> list[str]:
    """The bundle's entries with checkpoints recomputed and signed by ``key``, key in the header."""
    values = [json.loads(line) for line in lines if json.loads(line).get("kind") == "entry"]
    tree, checkpoints = TreeBuilder(), []
    for value in values:
        tree.append(entry_leaf(canonical(value)))
        if value["sequence"] % EVERY == 0:
            checkpoint = Checkpoint(ORIGIN, value["sequence"], tree.root(), value["hash"], T0)
            checkpoints.append(checkpoint_line(sign(checkpoint, key)))
    header = header_line(ORIGIN, {"impostor": key.public_key()}, Genesis())
    return [header, *checkpoints, *(json.dumps(value) for value in values)]


def test_a_rewritten_log_re_signed_with_a_new_key_passes_only_unpinned() -> None:
    impostor = Ed25519PrivateKey.generate()
    forged = resigned(forge_from(bundle(), 123, user="mallory"), impostor)
    unpinned = verify_bundle(forged)
    assert unpinned.valid
    assert unpinned.keys_from_bundle
    assert found(verify(forged)) == [
        ("checkpoint_unknown_key", size) for size in range(EVERY, SIZE + 1, EVERY)
    ]
    assert found(verify(forged, witnessed=LOG.checkpoints[-1:]))[-1] == (
        "checkpoint_mismatch",
        SIZE,
    )


def test_a_tampered_checkpoint_root_invalidates_its_signature() -> None:
    lines = bundle()
    index = 1 + 3
    value = json.loads(lines[index])
    value["root"] = "00" * 32
    lines[index] = json.dumps(value)
    assert found(verify(lines)) == [("checkpoint_signature_invalid", 200)]


def test_a_tampered_witnessed_checkpoint_is_refused() -> None:
    signed = LOG.checkpoints[-1]
    tampered = replace(signed, checkpoint=replace(signed.checkpoint, size=SIZE + 50))
    report = verify(bundle(), witnessed=[tampered])
    assert found(report) == [("checkpoint_signature_invalid", SIZE + 50)]
    assert report.problems[0].line is None
    assert report.latest_checkpoint == SIZE


def test_two_signed_checkpoints_of_one_size_that_disagree_are_reported() -> None:
    other = make_log(size=200)
    forged = other.checkpoints[-1]
    forged = sign(replace(forged.checkpoint, root=b"\x01" * 32), KEY)
    report = verify(bundle(), witnessed=[forged])
    assert found(report) == [("checkpoints_inconsistent", 200), ("checkpoint_mismatch", 200)]


def test_a_witnessed_checkpoint_of_another_log_is_refused() -> None:
    other = make_log(size=EVERY, origin="elsewhere")
    report = verify(bundle(), witnessed=other.checkpoints)
    assert found(report) == [("checkpoint_wrong_origin", EVERY)]


def test_duplicate_checkpoints_are_harmless() -> None:
    lines = bundle(checkpoints=[*LOG.checkpoints, LOG.checkpoints[2]])
    assert verify(lines, witnessed=LOG.checkpoints).valid


def test_a_checkpoint_after_the_entries_is_malformed() -> None:
    lines = [*bundle(), checkpoint_line(LOG.checkpoints[0])]
    report = verify(lines)
    assert found(report) == [("malformed", EVERY)]
    assert report.problems[0].line == len(lines)


# -- malformed lines


def test_a_line_that_is_not_json_is_malformed_and_located() -> None:
    lines = bundle()
    index = at(lines, 123)
    lines[index] = "{not json\n"
    report = verify(lines)
    assert found(report) == [("malformed", None), ("entries_missing", 123)]
    assert report.problems[0].line == index + 1
    assert f"line {index + 1}, which could not be read" in report.problems[1].message


@pytest.mark.parametrize(
    "spoil",
    [
        lambda value: {key: item for key, item in value.items() if key != "action"},
        lambda value: value | {"note": "approved by the CEO"},
        lambda value: value | {"hash": value["hash"].upper()},
        lambda value: value | {"user": 5},
        lambda value: value | {"timestamp": 1.5},
    ],
)
def test_an_entry_line_with_bad_fields_is_malformed_and_the_walk_keeps_step(spoil: Any) -> None:
    lines = bundle()
    index = at(lines, 123)
    lines[index] = json.dumps(spoil(json.loads(lines[index])))
    report = verify(lines)
    assert len(report.problems) == 1
    assert report.problems[0].code == "malformed"
    assert report.problems[0].line == index + 1


def test_a_line_of_another_kind_is_malformed_and_its_entry_missing() -> None:
    lines = bundle()
    index = at(lines, 123)
    lines[index] = json.dumps(json.loads(lines[index]) | {"kind": "comment"})
    assert found(verify(lines)) == [("malformed", None), ("entries_missing", 123)]


def test_duplicate_json_keys_are_malformed() -> None:
    lines = bundle()
    index = at(lines, 123)
    lines[index] = lines[index].replace('{"kind":"entry",', '{"kind":"entry","user":"x",', 1)
    assert found(verify(lines))[0] == ("malformed", None)


def test_a_blank_line_inside_the_bundle_is_malformed() -> None:
    lines = bundle()
    lines.insert(at(lines, 5), "\n")
    report = verify(lines)
    assert found(report) == [("malformed", None)]
    assert report.problems[0].line == at(lines, 5)


def test_a_line_that_is_not_utf8_is_malformed() -> None:
    lines: list[str | bytes] = [*bundle()]
    lines.insert(3, b"\xff\xfe")
    assert found(verify_bundle(lines, keys=TRUSTED)) == [("malformed", None)]


@pytest.mark.parametrize(
    "header",
    [
        "not json",
        json.dumps({"format": "hypersdk-audit-bundle/v2", "origin": ORIGIN, "keys": {}}),
        json.dumps(
            json.loads(bundle()[0]) | {"genesis": {"size": 3, "head": "00" * 32, "frontier": []}}
        ),
        json.dumps(json.loads(bundle()[0]) | {"keys": {"ed25519:0000000000000000": "PEM"}}),
        json.dumps(json.loads(bundle()[0]) | {"origin": "two words"}),
        bundle()[1],
    ],
)
def test_a_bad_header_stops_the_verification(header: str) -> None:
    lines = bundle()
    lines[0] = header
    report = verify(lines)
    assert found(report) == [("malformed", None)]
    assert report.problems[0].line == 1
    assert report.entries == 0


def test_a_header_key_listed_under_a_wrong_id_is_malformed() -> None:
    value = json.loads(bundle()[0])
    pem = next(iter(value["keys"].values()))
    value["keys"] = {"ed25519:0123456789abcdef": pem}
    report = verify([json.dumps(value)])
    assert found(report) == [("malformed", None)]
    assert "has the id" in report.problems[0].message


def test_an_empty_bundle_is_malformed() -> None:
    assert found(verify([])) == [("malformed", None)]


def test_problems_beyond_the_limit_are_counted() -> None:
    lines = bundle()
    for sequence in range(1, SIZE + 1, 2):
        lines[at(lines, sequence)] = json.dumps(entry(lines, sequence) | {"result": "?"})
    report = verify(lines)
    assert len(report.problems) == MAX_PROBLEMS
    assert report.problems_not_listed == SIZE // 2 - MAX_PROBLEMS
    assert found(report)[0] == ("entry_edited", 1)


# -- retention cuts


def cut(at_size: int, log: Log = LOG) -> Genesis:
    return Genesis(at_size, log.entries[at_size - 1]["hash"], tuple(log.frontiers[at_size]))


@pytest.mark.parametrize("size", [100, 123, 1, 299])
def test_a_bundle_after_a_retention_cut_verifies(size: int) -> None:
    lines = bundle(genesis=cut(size))
    report = verify(lines)
    assert report.valid, report.problems
    assert report.first_sequence == size + 1
    assert report.entries == SIZE - size


def test_a_cut_bundle_caught_when_its_tail_is_cut_too() -> None:
    lines = bundle(genesis=cut(100))
    assert found(verify(lines[: at(lines, 201)])) == [("log_truncated", 201)]


def flip_frontier(genesis: Genesis) -> Genesis:
    first = bytes([genesis.frontier[0][0] ^ 1]) + genesis.frontier[0][1:]
    return replace(genesis, frontier=(first, *genesis.frontier[1:]))


def test_an_altered_genesis_frontier_is_caught_by_the_checkpoint_at_the_cut() -> None:
    report = verify(bundle(genesis=flip_frontier(cut(100))))
    assert found(report) == [("checkpoint_mismatch", 100)]
    assert "genesis was altered" in report.problems[0].message


def test_an_altered_genesis_frontier_is_caught_by_the_next_checkpoint() -> None:
    report = verify(bundle(genesis=flip_frontier(cut(123))))
    assert found(report) == [("checkpoint_mismatch", 150)]
    assert "genesis frontier does not lead to this checkpoint" in report.problems[0].message


def test_an_altered_genesis_head_is_caught() -> None:
    genesis = replace(cut(100), head="ab" * 32)
    report = verify(bundle(genesis=genesis))
    assert found(report) == [("checkpoint_mismatch", 100), ("chain_broken", 101)]
    assert "not the genesis head" in report.problems[1].message


def test_entries_before_the_genesis_do_not_belong() -> None:
    lines = bundle(genesis=cut(100))
    lines.insert(at(lines, 101), entry_line(LOG.entries[99]))
    report = verify(lines)
    assert found(report) == [("entry_inserted", 100)]
    assert "at or before the genesis (size 100)" in report.problems[0].message


# -- streaming


def streamed(size: int, every: int) -> Iterator[str]:
    """A bundle generated lazily, as a database cursor would feed it (two passes)."""
    tree, prev_hash = TreeBuilder(), GENESIS_HASH
    checkpoints = []
    for sequence in range(1, size + 1):
        value = make_entry(sequence, prev_hash)
        tree.append(entry_leaf(canonical(value)))
        prev_hash = value["hash"]
        if sequence % every == 0:
            checkpoints.append(sign(Checkpoint(ORIGIN, sequence, tree.root(), prev_hash, T0), KEY))
    yield header_line(ORIGIN, TRUSTED, Genesis())
    yield from (checkpoint_line(signed) for signed in checkpoints)
    prev_hash = GENESIS_HASH
    for sequence in range(1, size + 1):
        value = make_entry(sequence, prev_hash)
        prev_hash = value["hash"]
        yield entry_line(value)


def peak_memory(size: int) -> int:
    lines = list(streamed(size, every=size))  # generated before measuring
    tracemalloc.start()
    try:
        report = verify(iter(lines))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert report.valid


def test_memory_does_not_grow_with_the_number_of_entries() -> None:
    small, large = peak_memory(300), peak_memory(2400)
    assert large < small * 1.5 + 20_000, (small, large)


# -- the walk's less common paths


def test_the_last_entry_doubled_after_it_is_decided_by_the_checkpoint() -> None:
    lines = bundle()
    lines.append(forged_entry(lines, SIZE))
    report = verify(lines)
    assert found(report) == [("entry_inserted", SIZE)]
    assert report.problems[0].line == len(lines)


def test_two_entries_for_one_place_that_nothing_decides_are_reported_as_such() -> None:
    lines = bundle()
    lines.insert(at(lines, 124), forged_entry(lines, 124))
    del lines[at(lines, 125)]
    report = verify(lines)
    assert found(report) == [("entry_inserted", 124), ("entries_missing", 125)]
    assert "nothing after them shows which was inserted" in report.problems[0].message


def test_an_entry_claiming_a_later_place_that_does_not_link_there_is_inserted() -> None:
    lines = bundle()
    lines.insert(at(lines, 140), entry_line(make_entry(150, "ab" * 32)))
    report = verify(lines)
    assert found(report) == [("entry_inserted", 150)]
    assert "ahead of its place" in report.problems[0].message


def test_an_entry_moved_past_its_checkpoint_is_still_checked_against_it() -> None:
    lines = bundle()
    moved = lines.pop(at(lines, 150))
    lines.insert(at(lines, 160), moved)
    assert found(verify(lines)) == [("entries_reordered", 150)]
    forged = rehashed(json.loads(moved) | {"user": "mallory"})
    lines[at(lines, 150)] = json.dumps(forged)
    assert found(verify(lines)) == [("entries_reordered", 150), ("checkpoint_mismatch", 150)]


def test_two_gaps_in_a_row_are_two_problems() -> None:
    lines = bundle()
    del lines[at(lines, 106) : at(lines, 110)]
    del lines[at(lines, 101) : at(lines, 105)]
    assert found(verify(lines)) == [("entries_missing", 101), ("entries_missing", 106)]


def test_a_duplicate_of_an_entry_after_a_gap_is_inserted() -> None:
    lines = bundle()
    lines.insert(at(lines, 124), lines[at(lines, 124)])
    del lines[at(lines, 123)]
    assert sorted(found(verify(lines))) == [("entries_missing", 123), ("entry_inserted", 124)]


def test_the_entry_before_the_last_deleted_is_missing() -> None:
    lines = bundle()
    del lines[at(lines, SIZE - 1)]
    assert found(verify(lines)) == [("entries_missing", SIZE - 1)]


def test_a_malformed_entry_out_of_place_is_only_malformed() -> None:
    lines = bundle()
    value = json.loads(lines[at(lines, 10)])
    del value["action"]
    lines.insert(at(lines, 200), json.dumps(value))
    assert found(verify(lines)) == [("malformed", 10)]


def test_a_header_not_on_the_first_line_is_malformed() -> None:
    report = verify(["\n", *bundle()])
    assert found(report) == [("malformed", None), ("malformed", None)]
    assert "the header must be the first line" in report.problems[1].message


@pytest.mark.parametrize("line", ['{"kind":"entry","sequence":NaN}', "[" * 100_000 + "]" * 100_000])
def test_json_that_python_would_accept_is_still_malformed(line: str) -> None:
    lines = bundle()
    lines.insert(at(lines, 5), line)
    assert found(verify(lines))[0] == ("malformed", None)


def test_a_moved_block_is_one_problem() -> None:
    lines = bundle()
    block = lines[at(lines, 60) : at(lines, 66)]
    del lines[at(lines, 60) : at(lines, 66)]
    index = at(lines, 90)
    lines[index:index] = block
    report = verify(lines)
    assert found(report) == [("entries_reordered", 60)]
    assert report.problems[0].message.endswith("so do the next 5 entries, up to sequence 65")


def tamper(lines: list[str], rng: random.Random) -> None:
    """One random insider edit of a bundle's lines after the header."""
    index = rng.randrange(1, len(lines))
    other = rng.randrange(1, len(lines))
    operation = rng.choice(["delete", "repeat", "swap", "move", "cut", "edit", "rehash", "junk"])
    if operation == "delete":
        del lines[index]
    elif operation == "repeat":
        lines.insert(other, lines[index])
    elif operation == "swap":
        lines[index], lines[other] = lines[other], lines[index]
    elif operation == "move":
        lines.insert(other, lines.pop(index))
    elif operation == "cut":
        del lines[index : index + rng.randint(1, 15)]
    elif operation == "junk":
        lines[index] = '{"kind": "entry"'
    elif lines[index].startswith('{"kind":"entry"'):
        value = json.loads(lines[index]) | {"user": "mallory"}
        lines[index] = json.dumps(rehashed(value) if operation == "rehash" else value)


def without_checkpoints(lines: list[str]) -> list[str]:
    """The header and entry lines: what must survive for a bundle to be the same log."""
    return [line for line in lines if not line.startswith('{"kind":"checkpoint"')]


def test_random_tampering_never_passes_and_never_raises() -> None:
    rng = random.Random(20261207)
    genuine = bundle(make_log(size=60, every=10))
    for _ in range(250):
        lines = list(genuine)
        for _ in range(rng.randint(1, 3)):
            tamper(lines, rng)
        report = verify(lines)
        if without_checkpoints(lines) != without_checkpoints(genuine):
            assert not report.valid, lines
