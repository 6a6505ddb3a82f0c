"""Verify a HyperSDK audit log without the platform.

The audit service chains every entry to the one before it (SHA-256 over RFC 8785 JSON), makes
each entry a leaf of an RFC 9162 Merkle tree, and signs checkpoints of the tree's size, root and
chain head with Ed25519. An exported bundle holds the entries and those checkpoints; this
package, which depends only on the standard library, ``rfc8785`` and ``cryptography``, lets an
auditor who trusts nothing but the platform's public key check that no entry was edited,
removed, inserted, reordered or cut off since it was checkpointed, and says where.

Modules: :mod:`~hypersdk_auditproof.entries` (the hashed form of an entry),
:mod:`~hypersdk_auditproof.merkle` (the tree and its proofs),
:mod:`~hypersdk_auditproof.checkpoint` (signed checkpoints),
:mod:`~hypersdk_auditproof.bundle` (the export format),
:mod:`~hypersdk_auditproof.verify` (the verification) and
:mod:`~hypersdk_auditproof.cli` (``hypersdk-audit-verify``).
"""

from hypersdk_auditproof.bundle import Genesis
from hypersdk_auditproof.checkpoint import Checkpoint, SignedCheckpoint
from hypersdk_auditproof.verify import Problem, Report, verify_bundle

__all__ = ["Checkpoint", "Genesis", "Problem", "Report", "SignedCheckpoint", "verify_bundle"]
