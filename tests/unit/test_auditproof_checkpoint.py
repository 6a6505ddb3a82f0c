"""Signed checkpoints: the exact signed text, strict parsing, Ed25519 signatures."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hypersdk_auditproof.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    body,
    key_id,
    parse_body,
    sign,
    verify_signature,
)
from hypersdk_auditproof.entries import GENESIS_HASH
from hypersdk_auditproof.merkle import EMPTY_ROOT

ROOT = hashlib.sha256(b"root").digest()
HEAD = hashlib.sha256(b"head").hexdigest()
WHEN = datetime(2026, 12, 7, 10, 11, 12, 123456, tzinfo=UTC)
CHECKPOINT = Checkpoint(origin="hypersdk.example/audit", size=1234, root=ROOT, head=HEAD, time=WHEN)

BODY = (
    "hypersdk-audit-checkpoint/v1\n"
    "origin hypersdk.example/audit\n"
    "size 1234\n"
    f"root {ROOT.hex()}\n"
    f"head {HEAD}\n"
    "time 2026-12-07T10:11:12.123456Z\n"
).encode()


@pytest.fixture(scope="module")
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_the_body_is_the_exact_signed_text() -> None:
    assert body(CHECKPOINT) == BODY
    assert parse_body(BODY) == CHECKPOINT


def test_times_are_written_in_utc_with_microseconds() -> None:
    elsewhere = WHEN.astimezone(timezone(timedelta(hours=-8))).replace(microsecond=0)
    text = body(Checkpoint("log", 0, EMPTY_ROOT, GENESIS_HASH, elsewhere))
    assert text.endswith(b"\ntime 2026-12-07T10:11:12.000000Z\n")
    assert parse_body(text).time == elsewhere


def replaced(old: str, new: str) -> bytes:
    return BODY.replace(old.encode(), new.encode(), 1)


@pytest.mark.parametrize(
    "data",
    [
        replaced("hypersdk-audit-checkpoint/v1", "hypersdk-audit-checkpoint/v2"),
        replaced("size 1234", "size 01234"),
        replaced("size 1234", "size +1234"),
        replaced("size 1234", "size 1_234"),
        replaced("size 1234", "size \u0661234"),
        replaced("size 1234", "size  1234"),
        replaced("size 1234\n", ""),
        replaced(f"root {ROOT.hex()}", f"root {ROOT.hex()[:-2]}"),
        replaced(f"root {ROOT.hex()}", f"root {ROOT.hex().upper()}"),
        replaced(f"head {HEAD}", f"head {HEAD}00"),
        replaced("origin hypersdk.example/audit", "origin hypersdk example"),
        replaced("origin hypersdk.example/audit", "origin hypersdk\texample"),
        replaced("origin hypersdk.example/audit", "origin hypersdk\x7fexample"),
        replaced("origin hypersdk.example/audit", "origin "),
        replaced("origin hypersdk.example/audit", "origin\thypersdk"),
        replaced("time 2026-12-07T10:11:12.123456Z", "time 2026-12-07T10:11:12Z"),
        replaced("time 2026-12-07T10:11:12.123456Z", "time 2026-12-07T10:11:12.123456+00:00"),
        replaced("time 2026-12-07T10:11:12.123456Z", "time 2026-02-30T10:11:12.123456Z"),
        replaced("head", "time"),
        BODY + b"extra 1\n",
        BODY[:-1],
        BODY + b"\n",
        BODY.replace(b"\n", b"\r\n"),
        b"\xff" + BODY,
        b"",
    ],
)
def test_parse_body_refuses_anything_body_would_not_write(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every refusal is a ValueError, by design
        parse_body(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"origin": ""},
        {"origin": "a b"},
        {"size": -1},
        {"size": True},
        {"root": b"short"},
        {"head": "AB" * 32},
        {"time": datetime(2026, 1, 1)},  # noqa: DTZ001 - a naive time is what is refused
    ],
)
def test_a_checkpoint_cannot_hold_what_its_body_cannot_say(changes: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"origin": "log", "size": 1, "root": ROOT, "head": HEAD, "time": WHEN}
    fields |= changes
    with pytest.raises(ValueError):  # noqa: PT011
        Checkpoint(**fields)


def test_key_id_is_a_prefix_of_the_raw_keys_sha256(private_key: Ed25519PrivateKey) -> None:
    public_key = private_key.public_key()
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert key_id(public_key) == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def test_sign_and_verify(private_key: Ed25519PrivateKey) -> None:
    signed = sign(CHECKPOINT, private_key)
    keys = {key_id(private_key.public_key()): private_key.public_key()}
    assert signed.key_id == key_id(private_key.public_key())
    assert verify_signature(signed, keys)
    private_key.public_key().verify(signed.signature, BODY)


def test_a_bad_signature_or_an_unknown_key_does_not_verify(private_key: Ed25519PrivateKey) -> None:
    signed = sign(CHECKPOINT, private_key)
    keys = {signed.key_id: private_key.public_key()}
    other = Ed25519PrivateKey.generate().public_key()
    assert not verify_signature(signed, {})
    assert not verify_signature(signed, {signed.key_id: other})
    forged = SignedCheckpoint(
        Checkpoint(CHECKPOINT.origin, CHECKPOINT.size + 1, ROOT, HEAD, WHEN),
        signed.key_id,
        signed.signature,
    )
    assert not verify_signature(forged, keys)
    flipped = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    assert not verify_signature(SignedCheckpoint(CHECKPOINT, signed.key_id, flipped), keys)
    short = SignedCheckpoint(CHECKPOINT, signed.key_id, b"short")
    assert not verify_signature(short, keys)
    garbage = SignedCheckpoint(CHECKPOINT, signed.key_id, "text")  # type: ignore[arg-type]
    assert not verify_signature(garbage, keys)
    assert not verify_signature(signed, {signed.key_id: "not a key"})  # type: ignore[dict-item]


def test_json_round_trip(private_key: Ed25519PrivateKey) -> None:
    signed = sign(CHECKPOINT, private_key)
    data = signed.to_json()
    assert data == {
        "origin": "hypersdk.example/audit",
        "size": 1234,
        "root": ROOT.hex(),
        "head": HEAD,
        "time": "2026-12-07T10:11:12.123456Z",
        "key_id": signed.key_id,
        "signature": base64.b64encode(signed.signature).decode(),
    }
    assert SignedCheckpoint.from_json(data) == signed
    assert SignedCheckpoint.from_json({"kind": "checkpoint", **data}) == signed


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": "1234"}, "size is an integer"),
        ({"size": 1.0}, "size is an integer"),
        ({"size": -3}, "non-negative"),
        ({"root": "00" * 31}, "root is 64"),
        ({"root": None}, "'root' is a string"),
        ({"head": "zz" * 32}, "head is 64"),
        ({"time": "2026-12-07 10:11:12"}, "not a time"),
        ({"origin": "two words"}, "whitespace"),
        ({"key_id": "ed25519:ABCDEF0123456789"}, "key id"),
        ({"key_id": "rsa:0123456789abcdef"}, "key id"),
        ({"signature": "not base64!"}, "base64"),
        ({"signature": base64.b64encode(b"x" * 63).decode()}, "64 bytes"),
        ({"extra": 1}, "unknown keys: extra"),
        ({"kind": "entry"}, "unknown keys: kind"),
    ],
)
def test_from_json_is_strict(
    private_key: Ed25519PrivateKey, changes: dict[str, Any], message: str
) -> None:
    data = sign(CHECKPOINT, private_key).to_json() | changes
    with pytest.raises(ValueError, match=message):
        SignedCheckpoint.from_json(data)


def test_from_json_names_what_is_missing(private_key: Ed25519PrivateKey) -> None:
    data = sign(CHECKPOINT, private_key).to_json()
    del data["head"]
    with pytest.raises(ValueError, match="lacks head"):
        SignedCheckpoint.from_json(data)
    with pytest.raises(ValueError, match="is a JSON object"):
        SignedCheckpoint.from_json([data])  # type: ignore[arg-type]


def test_non_canonical_base64_is_refused(private_key: Ed25519PrivateKey) -> None:
    data = sign(CHECKPOINT, private_key).to_json()
    # 64 bytes encode to 86 characters and "==": the last character carries 4 unused bits.
    text = data["signature"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[-3])
    sloppy = text[:-3] + alphabet[last | 1 if last % 2 == 0 else last & ~1] + "=="
    assert base64.b64decode(sloppy) == base64.b64decode(text)
    with pytest.raises(ValueError, match="canonical base64"):
        SignedCheckpoint.from_json(data | {"signature": sloppy})
