"""PostgreSQL adapter of the audit log (schema ``audit``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC
from typing import Any

import asyncpg

from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, canonical, link
from hypersdk_audit.core.proofs import Node, TreeHead, root_at, root_nodes
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_audit.ports.outbound import AuditLog
from hypersdk_auditproof.checkpoint import Checkpoint, SignedCheckpoint
from hypersdk_auditproof.entries import entry_leaf
from hypersdk_auditproof.merkle import TreeBuilder

SCHEMA = "audit"
MIGRATIONS = [
    """
    CREATE TABLE entries (
        sequence bigint PRIMARY KEY,
        event_id text NOT NULL UNIQUE,
        timestamp timestamptz NOT NULL,
        "user" text,
        action text NOT NULL,
        resource text,
        result text NOT NULL,
        source_ip text,
        request_id text,
        prev_hash char(64) NOT NULL,
        hash char(64) NOT NULL
    );
    """,
    # Decisions 0029, 0030: the producing service (from its broker login) and audit's receive time;
    # NULL on entries recorded before, whose hashes do not cover them. The quarantine keeps
    # events refused as not genuine; they are never chained.
    """
    ALTER TABLE entries ADD COLUMN producer text, ADD COLUMN received_at timestamptz;
    CREATE TABLE quarantine (
        number bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        received_at timestamptz NOT NULL,
        event_id text NOT NULL,
        claimed_type text NOT NULL,
        claimed_source text NOT NULL,
        claimed_actor text,
        login text,
        producer text,
        reason text NOT NULL,
        envelope jsonb NOT NULL
    );
    """,
    # Decision 0047: the Merkle tree over entries (every perfect subtree's root, kept as it
    # completes; level 0 are the leaves) and the signed checkpoints of it. Entries chained
    # before this migration get their leaves when the service starts (catch_up_tree).
    """
    CREATE TABLE tree (
        level smallint NOT NULL,
        index bigint NOT NULL,
        hash bytea NOT NULL,
        PRIMARY KEY (level, index)
    );
    CREATE TABLE checkpoints (
        size bigint PRIMARY KEY,
        origin text NOT NULL,
        root bytea NOT NULL,
        head char(64) NOT NULL,
        time timestamptz NOT NULL,
        key_id text NOT NULL,
        signature bytea NOT NULL
    );
    """,
]
_CATCH_UP_BATCH = 5000
_CHAIN_LOCK = 0x41554454  # "AUDT": serialises appends across audit replicas.
_COPY_COLUMNS = (
    "sequence",
    "event_id",
    "timestamp",
    "user",
    "action",
    "resource",
    "result",
    "source_ip",
    "request_id",
    "producer",
    "received_at",
    "prev_hash",
    "hash",
)
_COLUMNS = ", ".join(f'"{column}"' if column == "user" else column for column in _COPY_COLUMNS)


class PostgresAuditLog(AuditLog):
    """Entries in ``audit.entries``, the tree in ``audit.tree``; one advisory lock for appends.

    A batch costs one transaction: a lock, four reads and two COPYs, however many entries.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def append_batch(
        self, batch: Sequence[EntryFields], *, quarantine: Sequence[QuarantinedEvent] = ()
    ) -> list[ChainedEntry]:
        """Chain after the current head and COPY the new rows, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHAIN_LOCK)
            seen = {
                row["event_id"]
                for row in await conn.fetch(
                    "SELECT event_id FROM audit.entries WHERE event_id = ANY($1::text[])",
                    [fields.event_id for fields in batch],
                )
            }
            head = await conn.fetchrow(
                "SELECT sequence, hash FROM audit.entries ORDER BY sequence DESC LIMIT 1"
            )
            sequence = 0 if head is None else head["sequence"]
            prev_hash = GENESIS_HASH if head is None else head["hash"]
            if await _tree_size(conn) < sequence:  # an older replica chained without it
                while await _extend_tree(conn, _CATCH_UP_BATCH):
                    pass
            tree = await _tree_at(conn, sequence)
            added: list[ChainedEntry] = []
            nodes: list[tuple[int, int, bytes]] = []
            for fields in batch:
                if fields.event_id in seen:
                    continue
                seen.add(fields.event_id)
                sequence += 1
                entry, leaf = link(fields, sequence=sequence, prev_hash=prev_hash)
                prev_hash = entry.hash
                added.append(entry)
                nodes += tree.append(leaf)
            if added:
                await conn.copy_records_to_table(
                    "entries",
                    schema_name=SCHEMA,
                    columns=_COPY_COLUMNS,
                    records=[tuple(getattr(entry, c) for c in _COPY_COLUMNS) for entry in added],
                )
                await conn.copy_records_to_table(
                    "tree", schema_name=SCHEMA, columns=("level", "index", "hash"), records=nodes
                )
            if quarantine:
                await conn.executemany(
                    f"INSERT INTO audit.quarantine ({_QUARANTINE_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb) "
                    "ON CONFLICT (id) DO NOTHING",
                    [_quarantine_row(record) for record in quarantine],
                )
            return added

    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """One page."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM audit.entries WHERE sequence > $1 ORDER BY sequence LIMIT $2",
            after_sequence,
            limit,
        )
        return [_entry(row) for row in rows]

    async def walk(self) -> AsyncIterator[ChainedEntry]:
        """Stream in batches with a cursor."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            async for row in conn.cursor(
                f"SELECT {_COLUMNS} FROM audit.entries ORDER BY sequence", prefetch=1000
            ):
                yield _entry(row)

    async def catch_up_tree(self) -> int:
        """Give entries chained before the tree existed their leaves; how many were added.

        Batch by batch under the chain lock, so appends go on between batches. An append that
        finds the tree behind (an older replica appended meanwhile) catches up itself.
        """
        added = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHAIN_LOCK)
                count = await _extend_tree(conn, _CATCH_UP_BATCH)
            if not count:
                return added
            added += count

    async def entry(self, sequence: int) -> ChainedEntry | None:
        """One entry."""
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM audit.entries WHERE sequence = $1", sequence
        )
        return None if row is None else _entry(row)

    async def tree_head(self) -> TreeHead:
        """The head and the root's nodes read in one snapshot."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            head = await conn.fetchrow(
                "SELECT sequence, hash FROM audit.entries ORDER BY sequence DESC LIMIT 1"
            )
            size = 0 if head is None else int(head["sequence"])
            nodes = await _nodes(conn, root_nodes(size))
        return TreeHead(
            size=size,
            root=root_at(size, nodes),
            head=GENESIS_HASH if head is None else head["hash"],
        )

    async def tree_nodes(self, nodes: Iterable[Node]) -> dict[Node, bytes]:
        """One query."""
        async with self._pool.acquire() as conn:
            return await _nodes(conn, set(nodes))

    async def add_checkpoint(self, signed: SignedCheckpoint) -> SignedCheckpoint:
        """Insert unless its size is kept already; the one kept."""
        checkpoint = signed.checkpoint
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO audit.checkpoints (size, origin, root, head, time, key_id, signature)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (size) DO NOTHING",
                checkpoint.size,
                checkpoint.origin,
                checkpoint.root,
                checkpoint.head,
                checkpoint.time,
                signed.key_id,
                signed.signature,
            )
            row = await conn.fetchrow(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM audit.checkpoints WHERE size = $1",
                checkpoint.size,
            )
        return _checkpoint(row)

    async def checkpoints(self, *, after_size: int, limit: int) -> list[SignedCheckpoint]:
        """Smallest first."""
        rows = await self._pool.fetch(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM audit.checkpoints WHERE size > $1 "
            "ORDER BY size LIMIT $2",
            after_size,
            limit,
        )
        return [_checkpoint(row) for row in rows]

    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The largest size."""
        row = await self._pool.fetchrow(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM audit.checkpoints ORDER BY size DESC LIMIT 1"
        )
        return None if row is None else _checkpoint(row)

    async def quarantined(self, *, after_number: int, limit: int) -> list[QuarantinedEvent]:
        """One page of ``audit.quarantine``."""
        rows = await self._pool.fetch(
            f"SELECT number, {_QUARANTINE_COLUMNS} FROM audit.quarantine WHERE number > $1 "
            "ORDER BY number LIMIT $2",
            after_number,
            limit,
        )
        return [
            QuarantinedEvent(**{**dict(row), "envelope": json.loads(row["envelope"])})
            for row in rows
        ]


_QUARANTINE_FIELDS = (
    "id",
    "received_at",
    "event_id",
    "claimed_type",
    "claimed_source",
    "claimed_actor",
    "login",
    "producer",
    "reason",
    "envelope",
)
_QUARANTINE_COLUMNS = ", ".join(_QUARANTINE_FIELDS)


def _quarantine_row(record: QuarantinedEvent) -> tuple[Any, ...]:
    return tuple(
        json.dumps(record.envelope) if name == "envelope" else getattr(record, name)
        for name in _QUARANTINE_FIELDS
    )


_CHECKPOINT_COLUMNS = "size, origin, root, head, time, key_id, signature"


def _checkpoint(row: Any) -> SignedCheckpoint:
    checkpoint = Checkpoint(
        origin=row["origin"],
        size=int(row["size"]),
        root=bytes(row["root"]),
        head=row["head"],
        time=row["time"].astimezone(UTC),
    )
    return SignedCheckpoint(
        checkpoint=checkpoint, key_id=row["key_id"], signature=bytes(row["signature"])
    )


async def _tree_size(conn: asyncpg.Connection) -> int:
    """How many leaves the tree has."""
    last = await conn.fetchval("SELECT max(index) FROM audit.tree WHERE level = 0")
    return 0 if last is None else int(last) + 1


async def _nodes(conn: asyncpg.Connection, wanted: set[Node]) -> dict[Node, bytes]:
    if not wanted:
        return {}
    levels, indexes = zip(*sorted(wanted), strict=True)
    rows = await conn.fetch(
        "SELECT t.level, t.index, t.hash FROM audit.tree t "
        "JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, index) "
        "ON t.level = w.level AND t.index = w.index",
        list(levels),
        list(indexes),
    )
    return {(int(row["level"]), int(row["index"])): bytes(row["hash"]) for row in rows}


async def _extend_tree(conn: asyncpg.Connection, limit: int) -> int:
    """Leaves for up to ``limit`` entries the tree lacks (the chain lock held); how many."""
    size = await _tree_size(conn)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit.entries WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        size,
        limit,
    )
    if not rows:
        return 0
    tree = await _tree_at(conn, size)
    nodes: list[tuple[int, int, bytes]] = []
    for row in rows:
        entry = _entry(row)
        if entry.sequence != tree.size + 1:
            raise RuntimeError(f"the chain has a gap before {entry.sequence}")
        document = canonical(entry, sequence=entry.sequence, prev_hash=entry.prev_hash)
        nodes += tree.append(entry_leaf(document))
    await conn.copy_records_to_table(
        "tree", schema_name=SCHEMA, columns=("level", "index", "hash"), records=nodes
    )
    return len(rows)


async def _tree_at(conn: asyncpg.Connection, size: int) -> TreeBuilder:
    """The tree of the first ``size`` entries, ready to take the next leaf.

    A node missing means the tree does not hold those entries: nothing is appended then.
    """
    wanted = sorted(root_nodes(size), key=lambda node: -node[0])
    found = await _nodes(conn, set(wanted))
    if len(found) != len(wanted):
        raise RuntimeError(f"the audit tree lacks nodes of its first {size} leaves")
    return TreeBuilder(size, [found[node] for node in wanted])


def _entry(row: Any) -> ChainedEntry:
    return ChainedEntry(**dict(row))
