"""Checkpoint signers: the audit key in Vault transit, or in a local 0600 key file (decision 0047).

A checkpoint's key id is derived from its public key (``hypersdk_auditproof.checkpoint.key_id``),
so a verifier needs nothing but the public keys, whichever kind of key signed.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hypersdk_auditproof.checkpoint import key_id
from hypersdk_kit.transit import TransitSigner


class KeyFileSigner:
    """Signs with an Ed25519 private key read from a file (deployments without Vault)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = key.public_key()
        self._id = key_id(self._public)

    async def sign(self, message: bytes) -> tuple[str, bytes]:
        """Sign in process."""
        return self._id, self._key.sign(message)

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """The one key."""
        return {self._id: self._public}


class TransitCheckpointSigner:
    """Signs with the audit transit key; every version still readable verifies."""

    def __init__(self, signer: TransitSigner) -> None:
        self._signer = signer

    async def sign(self, message: bytes) -> tuple[str, bytes]:
        """One ``transit/sign`` call (``upstream_unavailable`` when Vault cannot answer)."""
        version, signature = await self._signer.sign(message)
        for held in self._signer.ring.versions:
            if held.version == version:
                return key_id(held.public_key), signature
        raise LookupError(f"version {version} of {self._signer.ring.key} is not held")

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """Every version the ring holds."""
        return {key_id(held.public_key): held.public_key for held in self._signer.ring.versions}
