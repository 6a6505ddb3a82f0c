"""The canonical form of an entry: byte-identical to the audit service's chain hash.

The service's ``chain.entry_hash`` now calls this library, so comparing with it alone would be
circular: ``ORIGINAL_HASHES`` were computed with the service's own implementation before that
change (``services/audit/src/hypersdk_audit/core/chain.py`` at commit 119291b) and pin the bytes
every entry already recorded was hashed over.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785

from hypersdk_audit.core import chain
from hypersdk_auditproof.entries import (
    GENESIS_HASH,
    HASHED_FIELDS,
    OPTIONAL_FIELDS,
    canonical,
    entry_hash,
    entry_leaf,
    format_timestamp,
)
from hypersdk_auditproof.merkle import leaf_hash

WHEN = datetime(2026, 12, 7, 10, 11, 12, 123456, tzinfo=UTC)

FIELDS = [
    chain.EntryFields(
        event_id="0b6f8f0e-1b8e-4f5e-9c1d-2f0a6c3e9d01",
        timestamp=WHEN,
        user="alice",
        action="identity.login.succeeded",
        resource="user:alice",
        result="success",
        source_ip="192.0.2.10",
        request_id="req-1",
    ),
    chain.EntryFields(
        event_id="evt-2",
        timestamp=WHEN.astimezone(timezone(timedelta(hours=-5))),
        user=None,
        action="identity.login.failed",
        resource=None,
        result="failure",
        source_ip=None,
        request_id=None,
    ),
    chain.EntryFields(
        event_id="evt-3",
        timestamp=WHEN + timedelta(microseconds=1),
        user="bob \u00e9\u4e2d\U0001f600",
        action="exporter.job.completed",
        resource="job:42",
        result="success",
        source_ip="2001:db8::1",
        request_id="req-3",
        producer="exporter",
        received_at=WHEN + timedelta(seconds=2),
    ),
    chain.EntryFields(
        event_id="evt-4",
        timestamp=datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
        user="carol",
        action="policy.role.assigned",
        resource="user:dave",
        result="success",
        source_ip="198.51.100.7",
        request_id="req-4",
        producer="policy",
    ),
]


ORIGINAL_HASHES = [
    (
        "fe2488ce890bc163fc12a7a0738f4c196e1a50c047051ae17038dfa4f2728913",
        "fa4e83029cb56afe28d0c1a85f3eb3c820b5e53b572a9443c98198779d01e3b6",
    ),
    (
        "020718be4e7a4590dd864508c2c6f1367cc9e0d4b9aea7a92bac9a95a403fa76",
        "09f2de23e9d96e2c3013f8240ea619f0778b0015767cc94732a4e7827a8553e1",
    ),
    (
        "ac9b880b405cf9afd4613b3e040897659e4dd4b3491916682f226acf6ebd6674",
        "ca04057325c9da3fd5e3b561c7628b6eeedf4a93cf20c4f1fdc17ab804075bff",
    ),
    (
        "e3fbe8e6e879b220c0714a0a3433d673d792bb3f996ea0355803d2cee27a5e0c",
        "4984f98a46529c79b1a2170e2f964ffce01609e4954817eeb23f6924e3d52c1a",
    ),
]
"""For each of FIELDS: its hash at sequence 1 after the genesis, and at 987654 after "ab" * 32."""
POSITIONS = [(1, GENESIS_HASH), (987654, "ab" * 32)]


def as_mapping(fields: chain.EntryFields, *, sequence: int, prev_hash: str) -> dict[str, Any]:
    """What a bundle carries: every field, times in their hashed form, plus the chain's."""
    document: dict[str, Any] = {key: getattr(fields, key) for key in HASHED_FIELDS}
    document["timestamp"] = chain.format_timestamp(fields.timestamp)
    if fields.received_at is not None:
        document["received_at"] = chain.format_timestamp(fields.received_at)
    document |= {"sequence": sequence, "prev_hash": prev_hash, "hash": "ignored", "kind": "entry"}
    return document


@pytest.mark.parametrize(("fields", "hashes"), list(zip(FIELDS, ORIGINAL_HASHES, strict=True)))
def test_the_hash_is_the_one_the_audit_service_always_wrote(
    fields: chain.EntryFields, hashes: tuple[str, str]
) -> None:
    for (sequence, prev_hash), expected in zip(POSITIONS, hashes, strict=True):
        document = as_mapping(fields, sequence=sequence, prev_hash=prev_hash)
        assert entry_hash(canonical(document)) == expected
        assert chain.entry_hash(fields, sequence=sequence, prev_hash=prev_hash) == expected


def test_a_chain_built_by_the_service_verifies_with_the_library() -> None:
    prev_hash = chain.GENESIS_HASH
    assert prev_hash == GENESIS_HASH
    for sequence, fields in enumerate(FIELDS, start=1):
        chained = chain.chain(fields, sequence=sequence, prev_hash=prev_hash)
        document = as_mapping(fields, sequence=sequence, prev_hash=prev_hash)
        assert entry_hash(canonical(document)) == chained.hash
        prev_hash = chained.hash


def test_optional_fields_are_left_out_when_none_and_the_others_kept() -> None:
    document = as_mapping(FIELDS[1], sequence=2, prev_hash=GENESIS_HASH)
    parsed = json.loads(canonical(document))
    assert set(parsed) == {*HASHED_FIELDS, "sequence", "prev_hash"} - set(OPTIONAL_FIELDS)
    assert parsed["user"] is None
    assert parsed["source_ip"] is None
    del document["producer"], document["received_at"]
    assert json.loads(canonical(document)) == parsed


def test_the_canonical_form_is_rfc8785_of_the_hashed_fields() -> None:
    document = as_mapping(FIELDS[2], sequence=3, prev_hash="cd" * 32)
    expected = {key: document[key] for key in HASHED_FIELDS} | {
        "sequence": 3,
        "prev_hash": "cd" * 32,
    }
    assert canonical(document) == rfc8785.dumps(expected)
    assert entry_leaf(canonical(document)) == leaf_hash(canonical(document))


def test_format_timestamp_matches_the_service() -> None:
    for value in (WHEN, WHEN.astimezone(timezone(timedelta(hours=3))), FIELDS[3].timestamp):
        assert format_timestamp(value) == chain.format_timestamp(value)
    assert format_timestamp(WHEN) == "2026-12-07T10:11:12.123456Z"
    with pytest.raises(ValueError, match="time zone"):
        format_timestamp(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize("missing", ["event_id", "timestamp", "user", "sequence", "prev_hash"])
def test_a_missing_required_field_is_named(missing: str) -> None:
    document = as_mapping(FIELDS[0], sequence=1, prev_hash=GENESIS_HASH)
    del document[missing]
    with pytest.raises(ValueError, match=f"no '{missing}' field"):
        canonical(document)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("timestamp", WHEN, "format times with format_timestamp"),
        ("user", 7, "string or null"),
        ("sequence", "1", "positive integer"),
        ("sequence", True, "positive integer"),
        ("sequence", 0, "positive integer"),
        ("prev_hash", None, "prev_hash must be a string"),
    ],
)
def test_values_that_cannot_be_hashed_are_refused(key: str, value: object, message: str) -> None:
    document = as_mapping(FIELDS[0], sequence=1, prev_hash=GENESIS_HASH)
    document[key] = value
    with pytest.raises(ValueError, match=message):
        canonical(document)
