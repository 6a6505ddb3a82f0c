"""Webhook signing as Standard Webhooks defines it: the official vector, round trips, rotation
with both signatures during the overlap, every refusal's code, and stable message ids."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hypersdk_webhooks.core import signing
from hypersdk_webhooks.core.signing import (
    DEFAULT_ROTATION_OVERLAP,
    SigningError,
    SigningErrorCode,
    SigningKeys,
    generate_secret,
    headers,
    message_id_for,
    parse_secret,
    sign,
    verify,
)

# The official test vector of Standard Webhooks: repository standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py (test_sign_function); the same values are in
# libraries/go/webhook_test.go (TestWebhookSign).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = 1_772_366_400
BODY = b'{"type":"vm.export.completed","data":{"id":"job-1"}}'
SECRET_A = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SECRET_B = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
SECRET_C = "whsec_" + base64.b64encode(bytes(range(200, 224))).decode()


def vector_headers(**changes: str) -> dict[str, str]:
    found = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    found.update({name.replace("_", "-"): value for name, value in changes.items()})
    return found


def refusal(call: Callable[[], object]) -> SigningError:
    with pytest.raises(SigningError) as caught:
        call()
    return caught.value


def signed(
    secrets: list[str], *, message_id: str = "msg_1", timestamp: int = NOW
) -> dict[str, str]:
    return headers(message_id=message_id, timestamp=timestamp, body=BODY, secrets=secrets)


# The official vector


def test_the_official_vector_signs_to_the_official_signature() -> None:
    signature = sign(
        message_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP, body=VECTOR_BODY, secrets=[VECTOR_SECRET]
    )
    assert signature == VECTOR_SIGNATURE


def test_the_official_vector_verifies_at_its_own_time() -> None:
    verify(headers=vector_headers(), body=VECTOR_BODY, secret=VECTOR_SECRET, now=VECTOR_TIMESTAMP)


def test_the_official_multi_signature_header_passes_and_unknown_versions_are_ignored() -> None:
    # The list of libraries/python/tests/test_webhooks.py (test_multi_sig_payload_is_valid).
    wrong = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    header = f"v1,{wrong} v2,{wrong} {VECTOR_SIGNATURE} v1,{wrong}"
    verify(
        headers=vector_headers(webhook_signature=header),
        body=VECTOR_BODY,
        secret=VECTOR_SECRET,
        now=VECTOR_TIMESTAMP,
    )


def test_the_official_vector_with_one_bit_changed_is_refused() -> None:
    # libraries/python/tests/test_webhooks.py (test_invalid_signature_raises_error).
    header = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
    error = refusal(
        lambda: verify(
            headers=vector_headers(webhook_signature=header),
            body=VECTOR_BODY,
            secret=VECTOR_SECRET,
            now=VECTOR_TIMESTAMP,
        )
    )
    assert error.code is SigningErrorCode.BAD_SIGNATURE


# Secrets


def test_a_generated_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_")
    assert len(parse_secret(first)) == 32
    assert base64.b64decode(first.removeprefix("whsec_"), validate=True) == parse_secret(first)
    assert first != second


@pytest.mark.parametrize("size", [24, 64])
def test_keys_of_24_and_64_bytes_are_accepted(size: int) -> None:
    key = bytes(range(size))
    assert parse_secret("whsec_" + base64.b64encode(key).decode()) == key


def test_unpadded_base64_is_accepted_as_the_official_libraries_accept_it() -> None:
    key = bytes(range(25))  # 25 bytes: base64 ends with "=="
    encoded = base64.b64encode(key).decode()
    assert encoded.endswith("==")
    assert parse_secret("whsec_" + encoded.rstrip("=")) == key


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # the prefix is lower case
        "whsec_",  # no key
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",  # not base64
        "whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw",  # a space inside
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwé",  # not ASCII
        "whsec_MfKQ9",  # a length no base64 has
        "whsec_" + base64.b64encode(bytes(23)).decode(),  # too short
        "whsec_" + base64.b64encode(bytes(65)).decode(),  # too long
    ],
)
def test_a_malformed_secret_is_refused_without_being_repeated(secret: str) -> None:
    error = refusal(lambda: parse_secret(secret))
    assert error.code is SigningErrorCode.INVALID_SECRET
    assert error.code == "invalid_secret"
    key_part = secret.removeprefix("whsec_")
    for text in (str(error), repr(error), error.detail):
        assert not key_part or key_part not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__  # no decoder traceback


# Signing and verifying


def test_a_signed_delivery_carries_the_three_headers_and_verifies() -> None:
    found = signed([SECRET_A], message_id="msg_abc")
    assert found["content-type"] == "application/json"
    assert found["webhook-id"] == "msg_abc"
    assert found["webhook-timestamp"] == str(NOW)
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", found["webhook-signature"])
    verify(headers=found, body=BODY, secret=SECRET_A, now=NOW)


def test_a_signature_is_the_hmac_of_id_timestamp_and_body() -> None:
    key = parse_secret(SECRET_A)
    expected = hmac.new(key, f"msg_1.{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert signed([SECRET_A])["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


def test_one_signature_per_secret_in_the_order_given() -> None:
    header = signed([SECRET_B, SECRET_A])["webhook-signature"]
    entries = header.split(" ")
    assert len(entries) == 2
    assert entries[0] == signed([SECRET_B])["webhook-signature"]
    assert entries[1] == signed([SECRET_A])["webhook-signature"]
    assert signed([SECRET_A, SECRET_B])["webhook-signature"] == f"{entries[1]} {entries[0]}"


def test_signing_with_no_secret_or_a_bare_string_is_refused() -> None:
    assert refusal(lambda: signed([])).code is SigningErrorCode.INVALID_SECRET
    with pytest.raises(TypeError):
        sign(message_id="msg_1", timestamp=NOW, body=BODY, secrets=SECRET_A)
    assert refusal(lambda: signed([SECRET_A, "whsec_nope"])).code is SigningErrorCode.INVALID_SECRET


@pytest.mark.parametrize("message_id", ["", "msg.1", "msg 1", "msg_1\r\nx-evil: 1", "x" * 257])
def test_signing_refuses_an_id_that_could_shift_the_signed_content(message_id: str) -> None:
    with pytest.raises(ValueError, match="message id"):
        signed([SECRET_A], message_id=message_id)


def test_signing_refuses_a_negative_timestamp() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        signed([SECRET_A], timestamp=-1)


@pytest.mark.parametrize(
    ("name", "value"),
    [("webhook-id", "msg_2"), ("webhook-timestamp", str(NOW + 1))],
)
def test_a_tampered_id_or_timestamp_is_a_bad_signature(name: str, value: str) -> None:
    found = signed([SECRET_A]) | {name: value}
    error = refusal(lambda: verify(headers=found, body=BODY, secret=SECRET_A, now=NOW))
    assert error.code is SigningErrorCode.BAD_SIGNATURE


def test_a_tampered_body_is_a_bad_signature() -> None:
    found = signed([SECRET_A])
    for body in (BODY + b" ", BODY.replace(b"job-1", b"job-2"), b""):
        error = refusal(lambda b=body: verify(headers=found, body=b, secret=SECRET_A, now=NOW))
        assert error.code is SigningErrorCode.BAD_SIGNATURE


def test_another_secret_is_a_bad_signature() -> None:
    error = refusal(lambda: verify(headers=signed([SECRET_A]), body=BODY, secret=SECRET_B, now=NOW))
    assert error.code is SigningErrorCode.BAD_SIGNATURE


def test_header_names_match_whatever_their_case() -> None:
    found = {name.title(): value for name, value in signed([SECRET_A]).items()}
    assert "Webhook-Signature" in found
    verify(headers=found, body=BODY, secret=SECRET_A, now=NOW)
    shouted = {name.upper(): value for name, value in signed([SECRET_A]).items()}
    verify(headers=shouted, body=BODY, secret=SECRET_A, now=NOW)


def test_one_header_given_twice_with_different_values_is_malformed() -> None:
    found = signed([SECRET_A]) | {"Webhook-Timestamp": str(NOW + 1)}
    error = refusal(lambda: verify(headers=found, body=BODY, secret=SECRET_A, now=NOW))
    assert error.code is SigningErrorCode.MALFORMED_HEADER


# Tolerance


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_a_timestamp_within_five_minutes_either_way_passes(offset: int) -> None:
    verify(headers=signed([SECRET_A]), body=BODY, secret=SECRET_A, now=NOW + offset)


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
def test_a_timestamp_beyond_five_minutes_either_way_is_refused(offset: int) -> None:
    # A delivery from the past (offset > 0) or from the future (offset < 0).
    error = refusal(
        lambda: verify(headers=signed([SECRET_A]), body=BODY, secret=SECRET_A, now=NOW + offset)
    )
    assert error.code is SigningErrorCode.TIMESTAMP_OUT_OF_TOLERANCE


def test_the_tolerance_is_the_callers_to_choose() -> None:
    found = signed([SECRET_A])
    verify(headers=found, body=BODY, secret=SECRET_A, now=NOW + 600, tolerance_seconds=600)
    error = refusal(
        lambda: verify(
            headers=found, body=BODY, secret=SECRET_A, now=NOW + 61, tolerance_seconds=60
        )
    )
    assert error.code is SigningErrorCode.TIMESTAMP_OUT_OF_TOLERANCE
    with pytest.raises(ValueError, match="tolerance"):
        verify(headers=found, body=BODY, secret=SECRET_A, now=NOW, tolerance_seconds=-1)


def test_a_forged_stale_delivery_is_a_bad_signature_not_a_stale_one() -> None:
    found = signed([SECRET_A]) | {"webhook-timestamp": str(NOW - 10_000)}
    error = refusal(lambda: verify(headers=found, body=BODY, secret=SECRET_A, now=NOW))
    assert error.code is SigningErrorCode.BAD_SIGNATURE


# Malformed headers

WELL_FORMED_WRONG = "v1," + base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"webhook-signature": None}, SigningErrorCode.NO_SIGNATURE),
        ({"webhook-signature": ""}, SigningErrorCode.NO_SIGNATURE),
        ({"webhook-signature": "   "}, SigningErrorCode.NO_SIGNATURE),
        ({"webhook-signature": "v1a,aGVsbG8= v2,aGVsbG8="}, SigningErrorCode.NO_SIGNATURE),
        ({"webhook-id": None}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-id": ""}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-id": "msg.1"}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-timestamp": None}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-timestamp": "hello"}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-timestamp": f"{NOW}.5"}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-timestamp": f"-{NOW}"}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-timestamp": f" {NOW}"}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-timestamp": "9" * 40}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-signature": "garbage"}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-signature": "v1,not*base64"}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-signature": "v1," + "A" * 22 + "=="}, SigningErrorCode.MALFORMED_HEADER),
        ({"webhook-signature": f"garbage {WELL_FORMED_WRONG}"}, SigningErrorCode.BAD_SIGNATURE),
    ],
)
def test_a_malformed_header_is_refused_with_its_code(
    changes: dict[str, str | None], code: SigningErrorCode
) -> None:
    found: dict[str, str] = signed([SECRET_A])
    for name, value in changes.items():
        if value is None:
            del found[name]
        else:
            found[name] = value
    error = refusal(lambda: verify(headers=found, body=BODY, secret=SECRET_A, now=NOW))
    assert error.code is code


def test_malformed_entries_beside_a_matching_one_do_not_stop_it() -> None:
    found = signed([SECRET_A])
    found["webhook-signature"] = f"garbage v1,not*base64 v1a,x  {found['webhook-signature']}"
    verify(headers=found, body=BODY, secret=SECRET_A, now=NOW)


def test_verifying_with_a_malformed_secret_is_refused() -> None:
    error = refusal(lambda: verify(headers=signed([SECRET_A]), body=BODY, secret="abc", now=NOW))
    assert error.code is SigningErrorCode.INVALID_SECRET


# Rotation


def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends() -> None:
    keys = SigningKeys(current=SECRET_A).rotated(SECRET_B, now=T0, overlap=timedelta(hours=24))
    assert keys.current == SECRET_B
    assert keys.previous == SECRET_A
    assert keys.previous_until == T0 + timedelta(hours=24)
    assert keys.active(T0) == (SECRET_B, SECRET_A)
    assert keys.active(T0 + timedelta(hours=24) - timedelta(microseconds=1)) == (SECRET_B, SECRET_A)
    assert keys.active(T0 + timedelta(hours=24)) == (SECRET_B,)
    assert keys.active(T0 + timedelta(days=30)) == (SECRET_B,)


def test_during_the_overlap_a_delivery_verifies_with_either_secret() -> None:
    keys = SigningKeys(current=SECRET_A).rotated(SECRET_B, now=T0, overlap=timedelta(hours=24))
    found = signed(list(keys.active(T0 + timedelta(hours=1))))
    current, previous = found["webhook-signature"].split(" ")
    assert current == signed([SECRET_B])["webhook-signature"]
    assert previous == signed([SECRET_A])["webhook-signature"]
    verify(headers=found, body=BODY, secret=SECRET_A, now=NOW)
    verify(headers=found, body=BODY, secret=SECRET_B, now=NOW)
    error = refusal(lambda: verify(headers=found, body=BODY, secret=SECRET_C, now=NOW))
    assert error.code is SigningErrorCode.BAD_SIGNATURE


def test_after_the_overlap_only_the_new_secret_verifies() -> None:
    keys = SigningKeys(current=SECRET_A).rotated(SECRET_B, now=T0, overlap=timedelta(hours=24))
    found = signed(list(keys.active(T0 + timedelta(hours=25))))
    assert " " not in found["webhook-signature"]
    verify(headers=found, body=BODY, secret=SECRET_B, now=NOW)
    error = refusal(lambda: verify(headers=found, body=BODY, secret=SECRET_A, now=NOW))
    assert error.code is SigningErrorCode.BAD_SIGNATURE


def test_the_default_overlap_is_24_hours() -> None:
    assert timedelta(hours=24) == DEFAULT_ROTATION_OVERLAP
    keys = SigningKeys(current=SECRET_A).rotated(SECRET_B, now=T0)
    assert keys.previous_until == T0 + timedelta(hours=24)


def test_a_zero_overlap_drops_the_old_secret_at_once() -> None:
    keys = SigningKeys(current=SECRET_A).rotated(SECRET_B, now=T0, overlap=timedelta(0))
    assert keys == SigningKeys(current=SECRET_B)
    assert keys.active(T0) == (SECRET_B,)


def test_rotating_again_within_the_overlap_keeps_only_two_secrets() -> None:
    keys = SigningKeys(current=SECRET_A).rotated(SECRET_B, now=T0)
    again = keys.rotated(SECRET_C, now=T0 + timedelta(hours=1), overlap=timedelta(hours=2))
    assert again.active(T0 + timedelta(hours=2)) == (SECRET_C, SECRET_B)
    assert again.previous_until == T0 + timedelta(hours=3)


def test_bad_rotations_and_key_sets_are_refused() -> None:
    keys = SigningKeys(current=SECRET_A)
    with pytest.raises(ValueError, match="current"):
        keys.rotated(SECRET_A, now=T0)
    with pytest.raises(ValueError, match="current"):  # the same key, written unpadded
        keys.rotated(SECRET_A.rstrip("="), now=T0)
    with pytest.raises(ValueError, match="negative"):
        keys.rotated(SECRET_B, now=T0, overlap=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="timezone-aware"):
        keys.rotated(SECRET_B, now=datetime(2026, 3, 1, 12, 0))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        keys.active(datetime(2026, 3, 1, 12, 0))  # noqa: DTZ001
    assert refusal(lambda: keys.rotated("whsec_short", now=T0)).code == "invalid_secret"
    assert refusal(lambda: SigningKeys(current="nope")).code == "invalid_secret"
    with pytest.raises(ValueError, match="together"):
        SigningKeys(current=SECRET_A, previous=SECRET_B)
    with pytest.raises(ValueError, match="together"):
        SigningKeys(current=SECRET_A, previous_until=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        SigningKeys(
            current=SECRET_A,
            previous=SECRET_B,
            previous_until=datetime(2026, 3, 1),  # noqa: DTZ001
        )


# Secrets never shown


def test_no_secret_appears_in_the_repr_or_str_of_signing_keys() -> None:
    keys = SigningKeys(current=SECRET_A).rotated(SECRET_B, now=T0)
    for text in (repr(keys), str(keys), f"{keys}", repr([keys])):
        for secret in (SECRET_A, SECRET_B):
            assert secret not in text
            assert secret.removeprefix("whsec_")[:12] not in text
        assert "whsec_" not in text
    assert "previous_until" in repr(keys)


def test_no_secret_or_signature_appears_in_a_verification_error() -> None:
    found = signed([SECRET_A])
    for secret in (SECRET_B, "whsec_" + SECRET_A.removeprefix("whsec_")[:20]):
        error = refusal(lambda s=secret: verify(headers=found, body=BODY, secret=s, now=NOW))
        for text in (str(error), repr(error), error.detail, *map(str, error.args)):
            assert secret.removeprefix("whsec_")[:12] not in text
            assert found["webhook-signature"].removeprefix("v1,")[:12] not in text
            assert BODY.decode() not in text


# Message ids


def test_a_message_id_is_stable_for_one_event_and_endpoint() -> None:
    first = message_id_for("evt-1", "ep-1")
    assert first == message_id_for("evt-1", "ep-1")
    assert re.fullmatch(r"msg_[A-Z2-7]{26}", first)
    # Pinned: changing the derivation would give in-flight retries new ids and break receivers'
    # deduplication across a deployment.
    assert first == "msg_VGEYTF4GR7NJNL4WPKUIN4AXF7"


def test_message_ids_differ_for_another_event_or_endpoint() -> None:
    ids = {
        message_id_for("evt-1", "ep-1"),
        message_id_for("evt-2", "ep-1"),
        message_id_for("evt-1", "ep-2"),
        message_id_for("ep-1", "evt-1"),
        message_id_for("ab", "c"),
        message_id_for("a", "bc"),
    }
    assert len(ids) == 6


def test_a_message_id_signs_and_verifies() -> None:
    message_id = message_id_for("evt-1", "ep-1")
    verify(headers=signed([SECRET_A], message_id=message_id), body=BODY, secret=SECRET_A, now=NOW)


def test_a_message_id_needs_both_ids() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        message_id_for("", "ep-1")
    with pytest.raises(ValueError, match="non-empty"):
        message_id_for("evt-1", "")


def test_the_receivers_check_in_the_docs_accepts_ours_and_refuses_a_forgery() -> None:
    """docs/webhooks.md shows receivers a verifier by hand: it must verify what we send."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    code = docs.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)
    verify_by_hand = namespace["verify"]
    old, new = signing.generate_secret(), signing.generate_secret()
    body = b'{"specversion":"1.0","id":"e1"}'
    sent = signing.headers(
        message_id="msg_1", timestamp=int(time.time()), body=body, secrets=(new, old)
    )
    verify_by_hand(sent, body, old)  # during a rotation, either secret verifies
    verify_by_hand(sent, body, new)
    with pytest.raises(ValueError, match="bad signature"):
        verify_by_hand(sent, body + b" ", new)
    with pytest.raises(ValueError, match="bad signature"):
        verify_by_hand(sent, body, signing.generate_secret())
