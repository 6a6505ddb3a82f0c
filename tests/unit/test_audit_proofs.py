"""Audit's Merkle tree, checkpoints and proofs on the in-memory log (decision 0047)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_audit.adapters.outbound.memory import InMemoryAuditLog
from hypersdk_audit.adapters.outbound.signers import KeyFileSigner
from hypersdk_audit.core.chain import EntryFields, canonical
from hypersdk_audit.core.service import AuditService
from hypersdk_auditproof import merkle
from hypersdk_auditproof.checkpoint import SignedCheckpoint, body, verify_signature
from hypersdk_auditproof.entries import entry_leaf
from hypersdk_contracts.errors import ErrorCode, ServiceError

from .audit_world import attribution

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def fields(number: int) -> EntryFields:
    return EntryFields(
        event_id=f"event-{number}",
        timestamp=T0 + timedelta(seconds=number),
        user="alice" if number % 3 else None,
        action="vm.export",
        resource=f"vm/{number}",
        result="success",
        source_ip="192.0.2.7",
        request_id=f"req-{number}",
        producer="gateway",
        received_at=T0 + timedelta(seconds=number, microseconds=5),
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


async def service(
    log: InMemoryAuditLog, key: Ed25519PrivateKey | None = None
) -> tuple[AuditService, list[SignedCheckpoint]]:
    published: list[SignedCheckpoint] = []

    async def publish(signed: SignedCheckpoint) -> None:
        published.append(signed)

    audit = AuditService(
        log=log,
        attribution=attribution(),
        clock=Clock(),
        signer=None if key is None else KeyFileSigner(key),
        origin="test-log",
        published=publish,
    )
    return audit, published


async def grow(log: InMemoryAuditLog, start: int, count: int) -> None:
    await log.append_batch([fields(n) for n in range(start, start + count)])


def leaf_of(log: InMemoryAuditLog, sequence: int) -> bytes:
    entry = log.entries[sequence - 1]
    return entry_leaf(canonical(entry, sequence=entry.sequence, prev_hash=entry.prev_hash))


async def test_the_tree_root_is_the_rfc9162_root_of_the_entries_canonical_json() -> None:
    log = InMemoryAuditLog()
    for size in (1, 2, 3, 7, 8, 9, 33):
        await grow(log, len(log.entries) + 1, size - len(log.entries))
        builder = merkle.TreeBuilder()
        for sequence in range(1, size + 1):
            builder.append(leaf_of(log, sequence))
        head = await log.tree_head()
        assert (head.size, head.root, head.head) == (size, builder.root(), log.entries[-1].hash)


async def test_a_checkpoint_is_signed_kept_published_and_not_repeated_for_an_unchanged_log() -> (
    None
):
    key = Ed25519PrivateKey.generate()
    log = InMemoryAuditLog()
    audit, published = await service(log, key)
    await grow(log, 1, 10)
    first = await audit.checkpoint()
    assert first.checkpoint.size == 10
    assert first.checkpoint.head == log.entries[-1].hash
    assert first.checkpoint.origin == "test-log"
    assert verify_signature(first, audit.public_keys())
    key.public_key().verify(first.signature, body(first.checkpoint))
    assert published == [first]
    assert await audit.checkpoint() == first  # nothing added: the same checkpoint
    assert published == [first]
    await grow(log, 11, 5)
    second = await audit.checkpoint()
    assert second.checkpoint.size == 15
    assert await audit.checkpoints(after_size=0, limit=10) == [first, second]
    assert await audit.latest_checkpoint() == second


async def test_an_idle_log_is_not_signed_again_for_the_record_of_its_own_checkpoint() -> None:
    log = InMemoryAuditLog()
    audit, published = await service(log, Ed25519PrivateKey.generate())
    await grow(log, 1, 3)
    first = await audit.checkpoint()
    # The checkpoint's event comes back and is chained: that alone signs nothing new.
    record = dataclasses.replace(fields(99), action="audit.checkpoint", producer="audit")
    await log.append_batch([record])
    assert await audit.checkpoint() == first
    await grow(log, 4, 1)  # anything else does
    assert (await audit.checkpoint()).checkpoint.size == 5
    assert len(published) == 2


async def test_without_a_key_no_checkpoint_is_signed() -> None:
    audit, _ = await service(InMemoryAuditLog())
    with pytest.raises(ServiceError) as refused:
        await audit.checkpoint()
    assert refused.value.code is ErrorCode.NOT_IMPLEMENTED


async def test_every_inclusion_proof_verifies_against_the_checkpointed_root() -> None:
    log = InMemoryAuditLog()
    audit, _ = await service(log, Ed25519PrivateKey.generate())
    await grow(log, 1, 37)
    checkpoint = (await audit.checkpoint()).checkpoint
    for sequence in range(1, 38):
        proof = await audit.inclusion(sequence)
        assert proof.tree_size == 37
        assert merkle.verify_inclusion(
            leaf_of(log, sequence), sequence - 1, 37, proof.hashes, checkpoint.root
        )
        assert not merkle.verify_inclusion(
            leaf_of(log, sequence % 37 + 1), sequence - 1, 37, proof.hashes, checkpoint.root
        )


async def test_inclusion_in_an_older_tree_and_consistency_between_checkpoints() -> None:
    log = InMemoryAuditLog()
    audit, _ = await service(log, Ed25519PrivateKey.generate())
    roots: dict[int, bytes] = {}
    for step in (5, 8, 13, 1, 21):
        await grow(log, len(log.entries) + 1, step)
        roots[len(log.entries)] = (await audit.checkpoint()).checkpoint.root
    sizes = sorted(roots)
    for old in sizes:
        for new in sizes:
            if old > new:
                continue
            proof = await audit.consistency(old, second=new)
            assert merkle.verify_consistency(old, new, proof.hashes, roots[old], roots[new])
    proof = await audit.inclusion(3, tree_size=5)
    assert merkle.verify_inclusion(leaf_of(log, 3), 2, 5, proof.hashes, roots[5])


@pytest.mark.parametrize(
    ("sequence", "tree_size"), [(0, None), (11, None), (5, 4), (1, 11), (1, 0)]
)
async def test_proofs_outside_the_log_are_refused_with_a_clear_error(
    sequence: int, tree_size: int | None
) -> None:
    log = InMemoryAuditLog()
    audit, _ = await service(log, Ed25519PrivateKey.generate())
    await grow(log, 1, 10)
    with pytest.raises(ServiceError) as refused:
        await audit.inclusion(sequence, tree_size=tree_size)
    assert refused.value.code is ErrorCode.VALIDATION_FAILED


async def test_a_consistency_proof_beyond_the_log_is_refused() -> None:
    log = InMemoryAuditLog()
    audit, _ = await service(log, Ed25519PrivateKey.generate())
    await grow(log, 1, 4)
    for first, second in ((5, None), (2, 5), (0, 4)):
        with pytest.raises(ServiceError) as refused:
            await audit.consistency(first, second=second)
        assert refused.value.code is ErrorCode.VALIDATION_FAILED


async def test_a_proof_is_never_answered_from_a_tree_that_lost_a_node() -> None:
    log = InMemoryAuditLog()
    audit, _ = await service(log, Ed25519PrivateKey.generate())
    await grow(log, 1, 8)
    del log.nodes[(2, 1)]  # leaves 4 to 7: on the path of leaf 0
    with pytest.raises(ServiceError) as refused:
        await audit.inclusion(1, tree_size=8)
    assert refused.value.code is ErrorCode.INTERNAL_ERROR
