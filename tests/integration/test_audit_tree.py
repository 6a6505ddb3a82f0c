"""Audit's Merkle tree and checkpoints in the real PostgreSQL (decision 0047).

The tree's nodes are written in the append's own transaction; the root at any size and every
proof come from O(log n) stored nodes; a log chained before the tree existed gets its leaves
at start; two replicas signing the same size keep one checkpoint.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_audit.adapters.outbound.postgres import (
    _COPY_COLUMNS,
    MIGRATIONS,
    SCHEMA,
    PostgresAuditLog,
)
from hypersdk_audit.adapters.outbound.signers import KeyFileSigner
from hypersdk_audit.core.chain import GENESIS_HASH, EntryFields, canonical, chain
from hypersdk_audit.core.service import AuditService
from hypersdk_audit.inject import create_audit_pool
from hypersdk_auditproof import merkle
from hypersdk_auditproof.checkpoint import verify_signature
from hypersdk_auditproof.entries import entry_leaf
from hypersdk_kit.database import apply_migrations
from tests.unit.audit_world import attribution

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/{database}"


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name = f"audit_tree_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN.format(database="postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield ADMIN_DSN.format(database=name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _fields(count: int) -> list[EntryFields]:
    now = datetime.now(UTC)
    return [
        EntryFields(
            event_id=str(uuid.uuid4()),
            timestamp=now,
            user="admin",
            action="api.call",
            resource="GET /api/v1/jobs",
            result="success",
            source_ip="127.0.0.1",
            request_id=str(uuid.uuid4()),
            producer="gateway",
            received_at=now,
        )
        for _ in range(count)
    ]


async def _leaves(pool: asyncpg.Pool) -> list[bytes]:
    """Every entry's leaf, recomputed from the stored fields."""
    log = PostgresAuditLog(pool)
    return [
        entry_leaf(canonical(entry, sequence=entry.sequence, prev_hash=entry.prev_hash))
        async for entry in log.walk()
    ]


async def test_the_stored_tree_gives_the_root_and_proofs_of_every_size(database: str) -> None:
    await apply_migrations(database, schema=SCHEMA, migrations=MIGRATIONS)
    pool = await create_audit_pool(database, size=2)
    try:
        log = PostgresAuditLog(pool)
        audit = AuditService(
            log=log, attribution=attribution(), signer=KeyFileSigner(Ed25519PrivateKey.generate())
        )
        roots: dict[int, bytes] = {}
        for batch in (1, 2, 5, 64, 200, 29):
            await log.append_batch(_fields(batch))
            signed = await audit.checkpoint()
            roots[signed.checkpoint.size] = signed.checkpoint.root
            assert verify_signature(signed, audit.public_keys())
        leaves = await _leaves(pool)
        builder = merkle.TreeBuilder()
        for leaf in leaves:
            builder.append(leaf)
        head = await log.tree_head()
        assert (head.size, head.root) == (len(leaves), builder.root())
        # Two rows per entry, near enough: the perfect subtrees and nothing else.
        stored = await pool.fetchval("SELECT count(*) FROM audit.tree")
        assert len(leaves) <= stored < 2 * len(leaves)
        sizes = sorted(roots)
        for sequence in (1, 2, 77, 150, len(leaves)):
            proof = await audit.inclusion(sequence)
            assert merkle.verify_inclusion(
                leaves[sequence - 1], sequence - 1, sizes[-1], proof.hashes, roots[sizes[-1]]
            )
        for old in sizes:
            proof = await audit.consistency(old)
            assert merkle.verify_consistency(
                old, sizes[-1], proof.hashes, roots[old], roots[sizes[-1]]
            )
        assert [c.checkpoint.size for c in await audit.checkpoints(after_size=0, limit=99)] == (
            sizes
        )
    finally:
        await pool.close()


async def test_a_log_chained_before_the_tree_gets_its_leaves_at_start(database: str) -> None:
    # The log as it was: only the first two migrations, entries chained without a tree.
    await apply_migrations(database, schema=SCHEMA, migrations=MIGRATIONS[:2])
    conn = await asyncpg.connect(database)
    try:
        rows = []
        prev = GENESIS_HASH
        for sequence, fields in enumerate(_fields(2500), start=1):
            entry = chain(fields, sequence=sequence, prev_hash=prev)
            prev = entry.hash
            rows.append(entry)
        columns = _COPY_COLUMNS
        await conn.copy_records_to_table(
            "entries",
            schema_name=SCHEMA,
            columns=columns,
            records=[tuple(getattr(entry, column) for column in columns) for entry in rows],
        )
    finally:
        await conn.close()
    await apply_migrations(database, schema=SCHEMA, migrations=MIGRATIONS)
    pool = await create_audit_pool(database, size=2)
    try:
        log = PostgresAuditLog(pool)
        assert await log.catch_up_tree() == 2500
        assert await log.catch_up_tree() == 0
        await log.append_batch(_fields(3))
        # An older replica chains more without the tree; the next append catches up itself.
        head = await pool.fetchrow(
            "SELECT sequence, hash FROM audit.entries ORDER BY sequence DESC LIMIT 1"
        )
        older, prev = [], head["hash"]
        for sequence, fields in enumerate(_fields(600), start=head["sequence"] + 1):
            entry = chain(fields, sequence=sequence, prev_hash=prev)
            prev = entry.hash
            older.append(tuple(getattr(entry, column) for column in _COPY_COLUMNS))
        await pool.copy_records_to_table(
            "entries", schema_name=SCHEMA, columns=_COPY_COLUMNS, records=older
        )
        await log.append_batch(_fields(2))
        leaves = await _leaves(pool)
        builder = merkle.TreeBuilder()
        for leaf in leaves:
            builder.append(leaf)
        assert (await log.tree_head()).root == builder.root()
        assert len(leaves) == 3105
    finally:
        await pool.close()


async def test_replicas_signing_at_once_keep_one_checkpoint_per_size(database: str) -> None:
    await apply_migrations(database, schema=SCHEMA, migrations=MIGRATIONS)
    pool = await create_audit_pool(database, size=4)
    try:
        log = PostgresAuditLog(pool)
        key = Ed25519PrivateKey.generate()
        published: list[object] = []

        async def publish(signed: object) -> None:
            published.append(signed)

        replicas = [
            AuditService(
                log=PostgresAuditLog(pool),
                attribution=attribution(),
                signer=KeyFileSigner(key),
                published=publish,
            )
            for _ in range(4)
        ]
        await log.append_batch(_fields(10))
        kept = await asyncio.gather(*(replica.checkpoint() for replica in replicas))
        assert len({signed.signature for signed in kept}) == 1
        assert await pool.fetchval("SELECT count(*) FROM audit.checkpoints") == 1
        assert len(published) == 1  # only the one kept is published
    finally:
        await pool.close()
