"""Standard Webhooks signing: secrets, signatures, verification, message ids, rotation.

The scheme is https://www.standardwebhooks.com (spec/standard-webhooks.md of
github.com/standard-webhooks/standard-webhooks): ``webhook-signature`` holds space-separated
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per secret in use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from secrets import token_bytes

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's marker, not a secret
SECRET_BYTES = 32
"""Random bytes in a secret we generate; the spec allows 24 to 64."""
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
MESSAGE_ID_PREFIX = "msg_"
DEFAULT_TOLERANCE_SECONDS = 300
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)
"""How long the previous secret still signs after a rotation, unless the caller says otherwise."""

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
CONTENT_TYPE = "application/json"

_VERSION = "v1"
_DIGEST_BYTES = 32
_MESSAGE_ID_CHARS = 26
_ID_PATTERN = re.compile(r"[\x21-\x2d\x2f-\x7e]{1,256}")  # printable ASCII, no space, no "."
_TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,15}")


class SigningErrorCode(StrEnum):
    """Why a secret or a delivery was refused: one stable code each."""

    INVALID_SECRET = "invalid_secret"  # noqa: S105 - an error code, not a secret
    NO_SIGNATURE = "no_signature"  # no signature header, or no v1 signature in it
    BAD_SIGNATURE = "bad_signature"  # v1 signatures present, none of them matches
    TIMESTAMP_OUT_OF_TOLERANCE = "timestamp_out_of_tolerance"
    MALFORMED_HEADER = "malformed_header"


class SigningError(Exception):
    """A secret or a signed delivery was refused; ``code`` is stable, ``detail`` a safe sentence.

    Neither ever holds a secret, a signature or the body.
    """

    def __init__(self, code: SigningErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


def generate_secret() -> str:
    """A new endpoint secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """The HMAC key in a ``whsec_`` secret; unpadded base64 passes, as in the spec's libraries."""
    if not secret.startswith(SECRET_PREFIX):
        raise SigningError(SigningErrorCode.INVALID_SECRET, f"a secret starts with {SECRET_PREFIX}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        # from None: the decoder's message and traceback stay out of logs next to the secret.
        raise SigningError(
            SigningErrorCode.INVALID_SECRET, "a secret's key is not valid base64"
        ) from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise SigningError(
            SigningErrorCode.INVALID_SECRET,
            f"a secret's key has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)}",
        )
    return key


def sign(*, message_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The ``webhook-signature`` value: one ``v1,`` signature per secret, in the order given."""
    if isinstance(secrets, str):
        raise TypeError("secrets is a sequence of secrets, not one secret")
    if not secrets:
        raise SigningError(SigningErrorCode.INVALID_SECRET, "at least one secret signs")
    _check_message_id(message_id)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("timestamp is a non-negative integer of seconds since the epoch")
    content = _signed_content(message_id, str(timestamp), body)
    return " ".join(
        f"{_VERSION},{base64.b64encode(_digest(parse_secret(s), content)).decode('ascii')}"
        for s in secrets
    )


def headers(
    *, message_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The headers of one delivery attempt: id, timestamp, signatures and the content type."""
    return {
        "content-type": CONTENT_TYPE,
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(
            message_id=message_id, timestamp=timestamp, body=body, secrets=secrets
        ),
    }


def verify(
    *,
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    now: int,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Accept a delivery signed with ``secret`` by any one of its v1 signatures, or raise.

    Header names are matched case-insensitively. The signature is checked before the timestamp,
    so ``timestamp_out_of_tolerance`` means a genuine delivery that is stale or from a skewed
    clock (a replay, a late retry), not a forgery.
    """
    if tolerance_seconds < 0:
        raise ValueError("tolerance_seconds is never negative")
    key = parse_secret(secret)
    found = _wanted_headers(headers)
    signatures = found.get(SIGNATURE_HEADER, "").split()
    message_id = found.get(ID_HEADER, "")
    timestamp = found.get(TIMESTAMP_HEADER, "")
    if not signatures:
        raise SigningError(SigningErrorCode.NO_SIGNATURE, f"{SIGNATURE_HEADER} is missing")
    if _ID_PATTERN.fullmatch(message_id) is None:
        raise SigningError(
            SigningErrorCode.MALFORMED_HEADER, f"{ID_HEADER} is missing or not a plain token"
        )
    if _TIMESTAMP_PATTERN.fullmatch(timestamp) is None:
        raise SigningError(
            SigningErrorCode.MALFORMED_HEADER,
            f"{TIMESTAMP_HEADER} is missing or not an integer of seconds",
        )
    refusal = _refusal(signatures, _digest(key, _signed_content(message_id, timestamp, body)))
    if refusal is not None:
        raise SigningError(*refusal)
    if abs(now - int(timestamp)) > tolerance_seconds:
        raise SigningError(
            SigningErrorCode.TIMESTAMP_OUT_OF_TOLERANCE,
            f"{TIMESTAMP_HEADER} is more than {tolerance_seconds} s from now",
        )


def message_id_for(event_id: str, endpoint_id: str) -> str:
    """The ``webhook-id`` of an event's deliveries to one endpoint: the same on every attempt.

    Receivers deduplicate on this id, so it is derived from the pair rather than drawn at
    random: a retry, a delivery row written again after a crash, or an operator's replay all
    carry the id the first attempt carried. It is not time-sortable (order by the event's time).
    """
    if not event_id or not endpoint_id:
        raise ValueError("event_id and endpoint_id are both non-empty")
    digest = hashlib.sha256(b"hypersdk-webhooks/message-id/v1\x00")
    for part in (event_id, endpoint_id):
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)  # no two pairs hash alike
    suffix = base64.b32encode(digest.digest()).decode("ascii")[:_MESSAGE_ID_CHARS]
    return MESSAGE_ID_PREFIX + suffix


@dataclass(frozen=True)
class SigningKeys:
    """An endpoint's secrets: the current one and, for a while after a rotation, the previous.

    Both are validated when built; neither appears in repr or str.
    """

    current: str = field(repr=False)
    previous: str | None = field(default=None, repr=False)
    previous_until: datetime | None = None
    """The previous secret signs while ``now < previous_until``."""

    def __post_init__(self) -> None:
        parse_secret(self.current)
        if (self.previous is None) != (self.previous_until is None):
            raise ValueError("previous and previous_until are set together")
        if self.previous is not None:
            parse_secret(self.previous)
        if self.previous_until is not None:
            _require_aware("previous_until", self.previous_until)

    def active(self, now: datetime) -> tuple[str, ...]:
        """The secrets that sign a delivery made at ``now``: the current one first."""
        _require_aware("now", now)
        if self.previous is None or self.previous_until is None or now >= self.previous_until:
            return (self.current,)
        return (self.current, self.previous)

    def rotated(
        self, new: str, *, now: datetime, overlap: timedelta = DEFAULT_ROTATION_OVERLAP
    ) -> SigningKeys:
        """``new`` becomes current; the current one keeps signing for ``overlap``.

        Only two secrets are kept: rotating again within the overlap drops the oldest at once.
        A zero overlap (a compromised secret) drops the current one at once.
        """
        _require_aware("now", now)
        if overlap < timedelta(0):
            raise ValueError("overlap is never negative")
        if hmac.compare_digest(parse_secret(new), parse_secret(self.current)):
            raise ValueError("the new secret is the current one")
        if not overlap:
            return SigningKeys(current=new)
        return SigningKeys(current=new, previous=self.current, previous_until=now + overlap)


def _signed_content(message_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode("ascii") + body


def _digest(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def _decode_signature(encoded: str) -> bytes | None:
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except ValueError:
        return None
    return decoded if len(decoded) == _DIGEST_BYTES else None


def _check_message_id(message_id: str) -> None:
    if _ID_PATTERN.fullmatch(message_id) is None:
        raise ValueError("a message id is 1 to 256 printable ASCII characters, without . or space")


def _wanted_headers(given: Mapping[str, str]) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for name, value in given.items():
        key = name.lower()
        if key not in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
            continue
        if key in wanted and wanted[key] != value:  # "Webhook-Id" and "webhook-id" disagree
            raise SigningError(SigningErrorCode.MALFORMED_HEADER, f"{key} is given twice")
        wanted[key] = value
    return wanted


def _refusal(signatures: list[str], expected: bytes) -> tuple[SigningErrorCode, str] | None:
    """None when one v1 entry matches ``expected``, else why the header is refused."""
    checked = malformed = False
    for entry in signatures:
        version, comma, encoded = entry.partition(",")
        if not comma:
            malformed = True
            continue
        if version != _VERSION:
            continue  # other schemes (v1a: ed25519) are for other verifiers, as the spec says
        candidate = _decode_signature(encoded)
        if candidate is None:
            malformed = True
        elif hmac.compare_digest(candidate, expected):
            return None
        else:
            checked = True
    if checked:
        return SigningErrorCode.BAD_SIGNATURE, "no v1 signature matches"
    if malformed:
        return SigningErrorCode.MALFORMED_HEADER, f"{SIGNATURE_HEADER} has a malformed entry"
    return SigningErrorCode.NO_SIGNATURE, f"{SIGNATURE_HEADER} has no v1 entry"


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
