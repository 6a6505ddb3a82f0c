"""Principals and grants signed in Vault transit; their public keys read from it (decision 0046).

Identity's and policy's Ed25519 keys are transit keys (``hypersdk-identity``,
``hypersdk-policy``): not exportable, so the private halves never leave Vault and never touch
a disk of ours. Each signature is one call to ``transit/sign/<key>`` with the service's own
AppRole, whose policy allows that key alone. Assertions keep their format (``hypersdk_kit.trust``):
a verifier cannot tell a transit signature from any other Ed25519 one.

A service that checks those assertions reads the key's public halves (``transit/keys/<key>``,
every version from ``min_decryption_version`` up) at start and again every
``refresh_seconds``. A rotation adds a version; signers keep signing with the previous one
until the new one is ``publish_seconds`` old (longer than any verifier takes to read it), so
no verifier ever meets a signature it cannot check, and both versions verify during the
overlap. Raising ``min_decryption_version`` retires the old one everywhere within one refresh.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hvac.exceptions import VaultError
from pydantic import BaseModel, Field

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_kit.runtime import Component, Periodic
from hypersdk_kit.trust import (
    AssertionSigner,
    ClaimsSigner,
    assemble,
    encode_claims,
    load_private_key,
    load_public_key,
    signed_message,
)
from hypersdk_kit.vault import VaultClientSettings, VaultSession

logger = logging.getLogger(__name__)

MOUNT = "transit"
REFRESH_SECONDS = 30.0
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)")
PUBLISH_SECONDS = 90.0
"""A new version signs only once it is this old: three refreshes of every verifier."""


@dataclass(frozen=True)
class KeyVersion:
    """One version of a transit key: its public half and when it was made."""

    version: int
    public_key: Ed25519PublicKey
    created: float


class TransitKeyRing:
    """The public keys of one transit key, kept current (a :class:`~hypersdk_kit.trust.KeyRing`).

    Also a component: started with the service, it refreshes every ``refresh_seconds``; a
    refresh that fails (Vault down) keeps the keys it had, so checking goes on.
    """

    def __init__(
        self,
        session: VaultSession,
        key: str,
        *,
        mount: str = MOUNT,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self.key = key
        self._mount = mount
        self._clock = clock
        self._versions: tuple[KeyVersion, ...] = ()
        self.signs = False
        """Set when this service signs with the key: readiness then needs Vault unsealed."""
        self._refresher = Periodic(
            f"reading the public keys of {key}", self.refresh, interval_seconds=refresh_seconds
        )

    def public_keys(self) -> tuple[Ed25519PublicKey, ...]:
        """Every version's public key, newest first (empty before the first read)."""
        return tuple(version.public_key for version in self._versions)

    @property
    def versions(self) -> tuple[KeyVersion, ...]:
        """The versions read, newest first."""
        return self._versions

    async def refresh(self) -> None:
        """Read the key's versions from Vault (``upstream_unavailable`` when it cannot answer)."""
        client = self._session.client
        read = functools.partial(
            self._session.call,
            client.secrets.transit.read_key,
            name=self.key,
            mount_point=self._mount,
        )
        data = (await asyncio.to_thread(read))["data"]
        if data.get("type") != "ed25519":
            raise ValueError(f"transit key {self.key} is not an ed25519 key")
        found = [
            KeyVersion(
                version=int(number),
                public_key=Ed25519PublicKey.from_public_bytes(
                    base64.b64decode(entry["public_key"])
                ),
                created=_timestamp(entry.get("creation_time")),
            )
            for number, entry in data["keys"].items()
        ]
        self._versions = tuple(sorted(found, key=lambda version: -version.version))

    def signing_version(self, publish_seconds: float) -> int:
        """The newest version at least ``publish_seconds`` old; the oldest one if none is."""
        if not self._versions:
            raise LookupError(f"no version of {self.key} read yet")
        now = self._clock()
        for version in self._versions:
            if now - version.created >= publish_seconds:
                return version.version
        return self._versions[-1].version

    async def ready(self) -> bool:
        """Checking needs only the keys held; signing needs Vault answering and unsealed."""
        if not self.signs:
            return True
        try:
            status = await asyncio.to_thread(self._session.client.sys.read_seal_status)
        except Exception:  # unreachable, or failing
            return False
        return status.get("sealed") is False

    async def start(self) -> None:
        """Keep reading the keys (the first read is the caller's, before serving)."""
        await self._refresher.start()

    async def stop(self) -> None:
        """Stop reading."""
        await self._refresher.stop()


class TransitSigner:
    """Signs assertions of one issuer with its transit key (a ``ClaimsSigner``)."""

    def __init__(
        self,
        session: VaultSession,
        ring: TransitKeyRing,
        *,
        issuer: str,
        ttl_seconds: int = 60,
        mount: str = MOUNT,
        publish_seconds: float = PUBLISH_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self.ring = ring
        self.issuer = issuer
        self._ttl = ttl_seconds
        self._mount = mount
        self._publish = publish_seconds
        self._clock = clock

    async def assert_claims(self, claims: dict[str, Any]) -> str:
        """One ``transit/sign`` call; ``upstream_unavailable`` when Vault cannot answer."""
        payload = encode_claims(
            claims, issuer=self.issuer, ttl_seconds=self._ttl, now=self._clock()
        )
        _, signature = await self.sign(signed_message(payload))
        return assemble(payload, signature)

    async def sign(self, message: bytes) -> tuple[int, bytes]:
        """The key version used and the Ed25519 signature of ``message`` (one call)."""
        version = self.ring.signing_version(self._publish)
        client = self._session.client
        sign = functools.partial(
            self._session.call,
            client.secrets.transit.sign_data,
            name=self.ring.key,
            hash_input=base64.b64encode(message).decode(),
            key_version=version,
            mount_point=self._mount,
        )
        try:
            answer: dict[str, Any] = await asyncio.to_thread(sign)
            return version, _signature(answer["data"]["signature"])
        except (VaultError, KeyError, ValueError) as exc:  # refused, or an odd answer
            logger.error("transit refused to sign with %s: %s", self.ring.key, type(exc).__name__)
            raise ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, TrustKeys.UNAVAILABLE) from exc


class PolicyKeySettings(BaseModel):
    """Where a service that checks grants finds policy's public keys: a mixin of its settings."""

    policy_public_key_file: Path | None = Field(
        default=None, description="Policy's Ed25519 public key (PEM), to check grants."
    )
    policy_transit_key: str | None = Field(
        default=None,
        description="Or the Vault transit key whose public keys check grants (decision 0046).",
    )


class TrustKeys:
    """A service's signer and the keys it checks, each from a file or from transit.

    Transit keys share one Vault session and one ring per key; :attr:`components` are the
    rings to start with the service (each read once here, before anything is served).
    """

    UNAVAILABLE = "The signing service is unavailable; try again shortly."

    def __init__(self, settings: VaultClientSettings) -> None:
        self._settings = settings
        self._session: VaultSession | None = None
        self._rings: dict[str, TransitKeyRing] = {}

    @property
    def components(self) -> list[Component]:
        """The rings to keep fresh while the service runs."""
        return list(self._rings.values())

    def _vault(self) -> VaultSession:
        if self._session is None:
            self._session = self._settings.vault_session(unavailable=self.UNAVAILABLE)
        return self._session

    async def ring(self, key: str) -> TransitKeyRing:
        """The ring of a transit key, read once."""
        if key not in self._rings:
            ring = TransitKeyRing(self._vault(), key)
            await ring.refresh()
            self._rings[key] = ring
        return self._rings[key]

    async def public(
        self, what: str, *, file: Path | None, transit_key: str | None
    ) -> Ed25519PublicKey | TransitKeyRing:
        """The key(s) ``what`` (a setting's name) is checked against."""
        if (file is None) == (transit_key is None):
            raise ValueError(f"set either {what}_public_key_file or {what}_transit_key")
        if transit_key is not None:
            return await self.ring(transit_key)
        assert file is not None
        return load_public_key(file)

    async def transit_signer(
        self, key: str, *, issuer: str, ttl_seconds: int = 60, readiness: bool = True
    ) -> TransitSigner:
        """A signer with a transit key.

        ``readiness``: the service cannot serve without signing, so it reads not ready while
        Vault is sealed (identity, policy); audit's checkpoints wait instead.
        """
        ring = await self.ring(key)
        ring.signs = ring.signs or readiness
        return TransitSigner(self._vault(), ring, issuer=issuer, ttl_seconds=ttl_seconds)

    async def signer(
        self, *, file: Path | None, transit_key: str | None, issuer: str, ttl_seconds: int
    ) -> tuple[ClaimsSigner, Ed25519PublicKey | TransitKeyRing]:
        """The service's signer, and the key(s) its own assertions are checked against."""
        if (file is None) == (transit_key is None):
            raise ValueError("set either signing_key_file or transit_key")
        if transit_key is not None:
            signer = await self.transit_signer(transit_key, issuer=issuer, ttl_seconds=ttl_seconds)
            return signer, signer.ring
        assert file is not None
        key = load_private_key(file)
        return AssertionSigner(key, issuer=issuer, ttl_seconds=ttl_seconds), key.public_key()


def _signature(text: str) -> bytes:
    """The bytes of a transit signature, ``vault:v<N>:<base64>``."""
    prefix, _, encoded = text.rpartition(":")
    if not prefix.startswith("vault:v"):
        raise ValueError("not a transit signature")
    return base64.b64decode(encoded)


def _timestamp(text: object) -> float:
    """Seconds since the epoch of a transit ``creation_time`` (RFC 3339, up to nanoseconds).

    Missing is 0 (the version counts as old: only OpenBao before creation times lacks one).
    """
    if not isinstance(text, str):
        return 0.0
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"unreadable creation_time {text!r}")
    whole, fraction, zone = match.groups()
    seconds = datetime.fromisoformat(whole + ("+00:00" if zone in ("Z", "z") else zone))
    return seconds.timestamp() + (float("0." + fraction) if fraction else 0.0)
