"""The bundle format, line by line: the published contract for outside verifiers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hypersdk_auditproof.bundle import (
    ENTRY_KEYS,
    FORMAT,
    Genesis,
    checkpoint_line,
    entry_line,
    header_line,
    load_public_key,
    parse_entry,
    parse_header,
    public_key_pem,
)
from hypersdk_auditproof.checkpoint import Checkpoint, key_id, sign
from hypersdk_auditproof.entries import GENESIS_HASH, canonical, entry_hash
from hypersdk_auditproof.merkle import EMPTY_ROOT

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()
PEM = PUBLIC.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
ENTRY: dict[str, Any] = {
    "sequence": 1,
    "event_id": "evt-1",
    "timestamp": "2026-12-07T10:11:12.123456Z",
    "user": None,
    "action": "identity.login.failed",
    "resource": None,
    "result": "failure",
    "source_ip": "192.0.2.1",
    "request_id": "req-1",
    "prev_hash": GENESIS_HASH,
}
ENTRY["hash"] = entry_hash(canonical(ENTRY))


def test_the_header_line() -> None:
    frontier = (EMPTY_ROOT, b"\x01" * 32)
    line = header_line("hypersdk.test/audit", {"label": PUBLIC}, Genesis(3, "ab" * 32, frontier))
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert json.loads(line) == {
        "format": "hypersdk-audit-bundle/v1",
        "origin": "hypersdk.test/audit",
        "keys": {key_id(PUBLIC): PEM},
        "genesis": {"size": 3, "head": "ab" * 32, "frontier": [EMPTY_ROOT.hex(), "01" * 32]},
    }
    header = parse_header(json.loads(line))
    assert header.genesis == Genesis(3, "ab" * 32, frontier)
    assert list(header.keys) == [key_id(PUBLIC)]
    assert FORMAT == "hypersdk-audit-bundle/v1"


def test_a_log_never_cut_starts_at_the_genesis_hash() -> None:
    line = json.loads(header_line("log", {}, Genesis()))
    assert line["genesis"] == {"size": 0, "head": GENESIS_HASH, "frontier": []}


def test_the_checkpoint_line() -> None:
    signed = sign(
        Checkpoint("log", 0, EMPTY_ROOT, GENESIS_HASH, datetime(2026, 1, 1, tzinfo=UTC)), KEY
    )
    line = checkpoint_line(signed)
    assert json.loads(line) == {"kind": "checkpoint", **signed.to_json()}
    assert line.startswith('{"kind":"checkpoint","origin":"log","size":0,')


def test_the_entry_line_keeps_every_key_in_order_and_is_ascii() -> None:
    line = entry_line(ENTRY | {"user": "j\u00fcrgen \U0001f600"})
    assert line.isascii()
    value = json.loads(line)
    assert tuple(value) == ENTRY_KEYS
    assert value["kind"] == "entry"
    assert value["producer"] is None
    assert value["received_at"] is None
    assert value["user"] == "j\u00fcrgen \U0001f600"


def test_an_entry_line_is_exported_as_stored_even_if_its_hash_is_wrong() -> None:
    value = json.loads(entry_line(ENTRY | {"hash": "cd" * 32}))
    assert value["hash"] == "cd" * 32
    parsed = parse_entry(value)
    assert parsed.canonical == canonical(ENTRY)
    assert entry_hash(parsed.canonical) != parsed.hash


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hash": None}, "'hash' must be a string"),
        ({"timestamp": datetime(2026, 1, 1, tzinfo=UTC)}, "format_timestamp"),
        ({"sequence": 0}, "positive integer"),
    ],
)
def test_entry_line_refuses_what_cannot_be_hashed(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        entry_line(ENTRY | changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hash": "CD" * 32}, "hash is 64 lower-case"),
        ({"prev_hash": "00"}, "prev_hash is 64 lower-case"),
        ({"extra": 1}, "unknown keys: extra"),
        ({"sequence": 2.0}, "positive integer"),
    ],
)
def test_parse_entry_is_strict(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_entry(json.loads(entry_line(ENTRY)) | changes)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": -1}, "non-negative"),
        ({"size": True}, "non-negative"),
        ({"head": "AB" * 32}, "64 lower-case"),
        ({"head": "ab" * 32}, "starts from the genesis hash"),
        ({"size": 2}, "has 1 hashes, not 0"),
        ({"size": 1, "head": "ab" * 32, "frontier": ("00" * 32,)}, "32 bytes"),
    ],
)
def test_a_genesis_must_describe_a_tree(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Genesis(**fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "hypersdk-audit-bundle/v2"}, "expected 'hypersdk-audit-bundle/v1'"),
        ({"keys": []}, "object of key id to PEM"),
        ({"keys": {"x": 1}}, "not PEM text"),
        ({"keys": {"x": "garbage"}}, "not a PEM public key"),
        ({"genesis": {"size": 0, "head": GENESIS_HASH}}, "lacks frontier"),
        ({"genesis": {"size": 0, "head": GENESIS_HASH, "frontier": "none"}}, "list of 64-digit"),
        ({"extra": True}, "unknown keys: extra"),
    ],
)
def test_parse_header_is_strict(changes: dict[str, Any], message: str) -> None:
    value = json.loads(header_line("log", {"k": PUBLIC}, Genesis())) | changes
    with pytest.raises(ValueError, match=message):
        parse_header(value)


def test_only_ed25519_public_keys_are_loaded() -> None:
    assert key_id(load_public_key(PEM)) == key_id(PUBLIC)
    assert public_key_pem(load_public_key(PEM.encode())) == PEM
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_pem = rsa_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="not an Ed25519 key"):
        load_public_key(rsa_pem)
    with pytest.raises(ValueError, match="not a PEM public key"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
