"""Signed assertions between services: zero trust on the bus.

Three kinds of short-lived Ed25519-signed assertions travel with requests and commands:

- a *principal* assertion, signed by identity when it authenticates a credential: who is
  calling (user, session or API key, key scopes, external roles);
- a *grant*, signed by policy when it allows a permission to that principal, for the
  operations one API route makes;
- a *request seal*, signed by the gateway for each request it puts on the bus: request ID,
  client address, actor, operation and target of exactly that request.

A service acting on a request checks them (``hypersdk_kit.guard``: signature, issuer, expiry,
permission, operation, and that all name the request's actor, and the seal its request ID)
instead of trusting that the message arrived on the bus. The format is compact and
dependency-free: ``v1.<base64url(JSON claims)>.<base64url(sig)>``, the signature covering
``hsdk-assertion-v1.`` plus the encoded claims.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_VERSION = "v1"
_CONTEXT = b"hsdk-assertion-v1."
MAX_CLOCK_SKEW_SECONDS = 5


class AssertionRejectedError(Exception):
    """An assertion failed a check; ``reason`` is a stable code safe to log and audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_claims(claims: dict[str, Any], *, issuer: str, ttl_seconds: int, now: float) -> str:
    """The payload part of an assertion: ``claims`` plus iss, iat, exp and a unique jti."""
    issued = int(now)
    body = {
        **claims,
        "iss": issuer,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())


def signed_message(payload: str) -> bytes:
    """What an assertion's signature covers."""
    return _CONTEXT + payload.encode()


def assemble(payload: str, signature: bytes) -> str:
    """The assertion of a payload and its Ed25519 signature."""
    return f"{_VERSION}.{payload}.{_b64(signature)}"


class ClaimsSigner(Protocol):
    """What signs identity's principals and policy's grants: a key here, or Vault transit."""

    async def assert_claims(self, claims: dict[str, Any]) -> str:
        """A signed assertion of ``claims`` (see :func:`encode_claims`)."""
        ...


class KeyRing(Protocol):
    """The public keys an issuer signs with now (several while a key is being rotated)."""

    def public_keys(self) -> tuple[Ed25519PublicKey, ...]:
        """Every key an assertion of the issuer may be checked against, newest first."""
        ...


@dataclass(frozen=True)
class AssertionSigner:
    """Signs claims as one issuer, with a lifetime, with a key held in memory."""

    key: Ed25519PrivateKey
    issuer: str
    ttl_seconds: int = 60
    clock: Callable[[], float] = time.time

    def sign(self, claims: dict[str, Any]) -> str:
        """A signed assertion of ``claims`` plus iss, iat, exp and a unique jti."""
        payload = encode_claims(
            claims, issuer=self.issuer, ttl_seconds=self.ttl_seconds, now=self.clock()
        )
        return assemble(payload, self.key.sign(signed_message(payload)))

    async def assert_claims(self, claims: dict[str, Any]) -> str:
        """:meth:`sign`, as a :class:`ClaimsSigner`."""
        return self.sign(claims)


@dataclass(frozen=True)
class AssertionVerifier:
    """Checks assertions of one issuer, against its key or each key of its ring."""

    key: Ed25519PublicKey | KeyRing
    issuer: str
    clock: Callable[[], float] = time.time

    def verify(
        self, token: str | None, *, check_expiry: bool = True, grace_seconds: int = 0
    ) -> dict[str, Any]:
        """The claims of a valid assertion, or :class:`AssertionRejectedError`.

        ``grace_seconds`` accepts an assertion that expired at most that long ago.
        """
        if not token:
            raise AssertionRejectedError("missing_assertion")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:  # noqa: PLR2004 - version.payload.signature
            raise AssertionRejectedError("malformed_assertion")
        try:
            signature = _unb64(parts[2])
        except ValueError as exc:
            raise AssertionRejectedError("bad_signature") from exc
        keys = (self.key,) if isinstance(self.key, Ed25519PublicKey) else self.key.public_keys()
        message = _CONTEXT + parts[1].encode()
        for key in keys:
            try:
                key.verify(signature, message)
                break
            except (InvalidSignature, ValueError):
                continue
        else:
            raise AssertionRejectedError("bad_signature")
        try:
            claims = json.loads(_unb64(parts[1]))
        except ValueError as exc:
            raise AssertionRejectedError("malformed_assertion") from exc
        if not isinstance(claims, dict) or claims.get("iss") != self.issuer:
            raise AssertionRejectedError("wrong_issuer")
        if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("iat"), int):
            raise AssertionRejectedError("malformed_assertion")
        now = self.clock()
        if claims["iat"] > now + MAX_CLOCK_SKEW_SECONDS:
            raise AssertionRejectedError("not_yet_valid")
        if check_expiry and claims["exp"] < now - MAX_CLOCK_SKEW_SECONDS - grace_seconds:
            raise AssertionRejectedError("expired")
        return claims


def generate_key_pair(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair: the private key 0600, the public key 0644."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(private)
    public_path.write_bytes(public)
    public_path.chmod(0o644)


def require_private_file(path: Path) -> None:
    """Refuse a key file that others may read or anyone but its owner may change.

    Group read is allowed: Kubernetes mounts Secrets 0440 for the pod's fsGroup.
    """
    if path.stat().st_mode & 0o037:
        raise PermissionError(f"{path} must be 0600 or 0440 (no group write, nothing for others)")


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key from a private file (:func:`require_private_file`)."""
    require_private_file(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key
