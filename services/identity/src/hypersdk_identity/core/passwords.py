"""The password policy of local users (OWASP ASVS 4, V2.1): length, not composition.

- at least 12 characters (code points), no composition rules (no "one digit, one symbol");
- at most 72 bytes of UTF-8: bcrypt reads no further, and a silently truncated password is
  worse than a refused one. That is at least 72 ASCII characters (ASVS asks that 64 be
  allowed); passphrases in scripts with multi-byte characters meet the byte limit sooner;
- not on a list of common passwords (case-insensitive), nor the user name itself.
"""

from __future__ import annotations

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_identity.ports.outbound import PasswordBlocklist

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer passwords are refused, never truncated.


def _refused(message: str) -> ServiceError:
    return ServiceError(ErrorCode.VALIDATION_FAILED, message)


def check_password_length(password: str) -> None:
    """Refuse passwords that are too short, or too long for bcrypt."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise _refused(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise _refused(
            f"The password must fit in {MAX_PASSWORD_BYTES} bytes of UTF-8 (bcrypt reads no "
            "further); choose a shorter passphrase."
        )


async def check_new_password(
    password: str, *, username: str, blocklist: PasswordBlocklist | None
) -> None:
    """Apply the whole policy to a password being set; raise ``validation_failed`` if refused."""
    check_password_length(password)
    if password.casefold() == username.casefold():
        raise _refused("The password must not be the user name.")
    if blocklist is not None and await blocklist.contains(password):
        raise _refused(
            "The password is on a list of commonly used passwords; choose a different one."
        )
