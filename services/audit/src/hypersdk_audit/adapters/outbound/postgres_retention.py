"""The retention job's view of ``audit``, as its own role: the only one that may DELETE entries.

The database holds the rest of the rules (migration 4, decision 0048): only a prefix sealed by a
genesis may go, never while a hold stands, and nothing else is ever updated or deleted.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from hypersdk_audit.adapters.outbound.postgres import (
    CHAIN_LOCK,
    HOLD_COLUMNS,
    append_in,
    stored_nodes,
)
from hypersdk_audit.core.chain import EntryFields
from hypersdk_audit.core.proofs import TreeHead, root_at, root_nodes
from hypersdk_audit.core.retention import Hold
from hypersdk_audit.ports.outbound import RetentionStore
from hypersdk_auditproof.checkpoint import SignedCheckpoint


class PostgresRetentionStore(RetentionStore):
    """Reads, and the one transaction of a cut."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def active_holds(self) -> list[Hold]:
        """Holds not lifted."""
        rows = await self._pool.fetch(
            f"SELECT {HOLD_COLUMNS} FROM audit.holds "  # noqa: S608 - column names, constants
            "WHERE lifted_at IS NULL ORDER BY placed_at"
        )
        return [Hold(**dict(row)) for row in rows]

    async def size(self) -> int:
        """The head's sequence."""
        value = await self._pool.fetchval("SELECT max(sequence) FROM audit.entries")
        return 0 if value is None else int(value)

    async def genesis_size(self) -> int:
        """0 for a log never cut."""
        value = await self._pool.fetchval("SELECT max(size) FROM audit.genesis")
        return 0 if value is None else int(value)

    async def action_of(self, sequence: int) -> str | None:
        """By primary key."""
        action: str | None = await self._pool.fetchval(
            "SELECT action FROM audit.entries WHERE sequence = $1", sequence
        )
        return action

    async def last_before(self, cutoff: datetime) -> int:
        """Up to the first entry audit received at or after ``cutoff``.

        By its producer's time for entries older than receive times; the index scan stops there.
        """
        first_kept = await self._pool.fetchval(
            "SELECT sequence FROM audit.entries "
            "WHERE COALESCE(received_at, timestamp) >= $1 ORDER BY sequence LIMIT 1",
            cutoff,
        )
        if first_kept is None:
            return await self.size()
        return int(first_kept) - 1

    async def tree_head_at(self, size: int) -> TreeHead:
        """Root from the stored perfect subtrees, head from the entry at ``size``."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            head = await conn.fetchval("SELECT hash FROM audit.entries WHERE sequence = $1", size)
            if head is None:
                raise RuntimeError(f"no audit entry {size} to seal a genesis at")
            nodes = await stored_nodes(conn, root_nodes(size))
        return TreeHead(size=size, root=root_at(size, nodes), head=head)

    async def cut(self, genesis: SignedCheckpoint, *, record: EntryFields, reason: str) -> int:
        """Genesis, record and delete in one transaction under the chain lock."""
        checkpoint = genesis.checkpoint
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
            await conn.execute(
                "INSERT INTO audit.checkpoints (size, origin, root, head, time, key_id, signature)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (size) DO NOTHING",
                checkpoint.size,
                checkpoint.origin,
                checkpoint.root,
                checkpoint.head,
                checkpoint.time,
                genesis.key_id,
                genesis.signature,
            )
            kept = await conn.fetchrow(
                "SELECT root, head FROM audit.checkpoints WHERE size = $1", checkpoint.size
            )
            if bytes(kept["root"]) != checkpoint.root or kept["head"] != checkpoint.head:
                raise RuntimeError(
                    f"the checkpoint kept for size {checkpoint.size} disagrees with the tree"
                )
            await conn.execute(
                "INSERT INTO audit.genesis (size, cut_at, reason) VALUES ($1, $2, $3)",
                checkpoint.size,
                checkpoint.time,
                reason,
            )
            await append_in(conn, [record])
            status = await conn.execute(
                "DELETE FROM audit.entries WHERE sequence <= $1", checkpoint.size
            )
        return int(status.split()[-1])
