"""The public shape of HyperSDK credentials, so services and secret scanners recognise them.

- Session tokens: ``hsdk_s_`` + 43 URL-safe base64 characters (256 bits from a CSPRNG).
- API keys, in the manner of GitHub's tokens: ``hsdk_k_`` + 32 base62 characters (~190 bits
  from a CSPRNG) + 6 base62 characters of the CRC32 of those 32. A scanner can tell a real key
  from a look-alike offline; the gateway refuses a malformed key without asking identity.

The checksum is no secret and no signature: it only catches typos and look-alikes.
"""

from __future__ import annotations

import hmac
import re
import secrets
import zlib

SESSION_TOKEN_PREFIX = "hsdk_s_"  # noqa: S105 - a public prefix, not a secret
API_KEY_PREFIX = "hsdk_k_"
API_KEY_RANDOM_LENGTH = 32
API_KEY_CHECKSUM_LENGTH = 6
BASE62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
API_KEY_PATTERN = re.compile(
    rf"^{API_KEY_PREFIX}[0-9A-Za-z]{{{API_KEY_RANDOM_LENGTH + API_KEY_CHECKSUM_LENGTH}}}$"
)
"""What a secret scanner can match: the prefix and 38 base62 characters."""


def base62(number: int, *, width: int) -> str:
    """``number`` in base62, left-padded with zeros to ``width`` characters."""
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(BASE62_ALPHABET[digit])
    return "".join(reversed(digits)).rjust(width, BASE62_ALPHABET[0])


def api_key_checksum(random_part: str) -> str:
    """The six base62 characters of the CRC32 of an API key's random part."""
    return base62(zlib.crc32(random_part.encode()), width=API_KEY_CHECKSUM_LENGTH)


def new_api_key() -> str:
    """A fresh API key: prefix, 32 random base62 characters, checksum."""
    random_part = "".join(secrets.choice(BASE62_ALPHABET) for _ in range(API_KEY_RANDOM_LENGTH))
    return API_KEY_PREFIX + random_part + api_key_checksum(random_part)


def is_well_formed_api_key(candidate: str) -> bool:
    """Whether ``candidate`` has the API key format and a matching checksum."""
    if not API_KEY_PATTERN.fullmatch(candidate):
        return False
    body = candidate.removeprefix(API_KEY_PREFIX)
    random_part, checksum = body[:API_KEY_RANDOM_LENGTH], body[API_KEY_RANDOM_LENGTH:]
    return hmac.compare_digest(checksum, api_key_checksum(random_part))
