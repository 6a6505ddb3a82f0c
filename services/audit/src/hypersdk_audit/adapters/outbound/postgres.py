"""PostgreSQL adapter of the audit log (schema ``audit``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC
from typing import Any

import asyncpg

from hypersdk_audit.adapters.outbound.postgres_query import filtered_page
from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, canonical, link
from hypersdk_audit.core.proofs import Node, TreeHead, root_at, root_nodes
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_audit.core.query import EVERY_ENTRY, EntryFilter
from hypersdk_audit.core.retention import Hold
from hypersdk_audit.core.verification import Problem, VerificationRun
from hypersdk_audit.ports.outbound import AuditLog, GenesisPoint
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
    # Decision 0048: append-only storage. The schema's owner is a role nobody logs in as; the
    # service's login may only INSERT and SELECT (GRANTS), and these triggers hold whatever the
    # grants say: no entry, tree node, checkpoint or quarantined event is ever updated, nothing
    # is truncated, and entries are deleted only as a retention cut, a prefix sealed by a
    # signed checkpoint recorded as the log's genesis, while no legal hold stands.
    """
    CREATE TABLE genesis (
        size bigint PRIMARY KEY REFERENCES checkpoints (size),
        cut_at timestamptz NOT NULL,
        reason text NOT NULL
    );
    CREATE TABLE holds (
        id text PRIMARY KEY,
        reason text NOT NULL,
        placed_by text NOT NULL,
        placed_at timestamptz NOT NULL,
        lifted_by text,
        lifted_at timestamptz
    );
    CREATE TABLE verifications (
        id text PRIMARY KEY,
        kind text NOT NULL,
        status text NOT NULL,
        requested_by text,
        started_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        finished_at timestamptz,
        from_size bigint NOT NULL,
        to_size bigint NOT NULL,
        checked bigint NOT NULL,
        valid boolean,
        latest_checkpoint bigint,
        problems jsonb NOT NULL,
        problems_not_listed integer NOT NULL
    );
    CREATE INDEX verifications_by_start ON verifications (started_at DESC);
    CREATE INDEX verifications_valid ON verifications (latest_checkpoint) WHERE valid;
    CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit.% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$;
    CREATE FUNCTION check_cut() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        sealed bigint := COALESCE((SELECT max(size) FROM audit.genesis), 0);
    BEGIN
        IF EXISTS (SELECT 1 FROM audit.holds WHERE lifted_at IS NULL) THEN
            RAISE EXCEPTION 'a legal hold suspends cutting audit entries'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF EXISTS (SELECT 1 FROM cut WHERE sequence > sealed) THEN
            RAISE EXCEPTION 'audit entries after the genesis (size %) cannot be cut', sealed
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF EXISTS (SELECT 1 FROM audit.entries WHERE sequence <= sealed) THEN
            RAISE EXCEPTION 'a cut removes every entry up to the genesis (size %)', sealed
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM audit.entries WHERE sequence > sealed
                AND action = 'audit.retention.cut' AND resource = 'entries/1-' || sealed
        ) THEN
            RAISE EXCEPTION 'a cut is recorded in the log before its entries go'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NULL;
    END $$;
    CREATE FUNCTION check_genesis() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.size <= COALESCE((SELECT max(size) FROM audit.genesis), 0) THEN
            RAISE EXCEPTION 'a genesis moves forward only' USING ERRCODE = 'check_violation';
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM audit.entries e JOIN audit.checkpoints c ON c.size = e.sequence
            WHERE e.sequence = NEW.size AND e.hash = c.head
        ) THEN
            RAISE EXCEPTION 'a genesis is a checkpoint of the entries as they are'
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$;
    CREATE FUNCTION check_lift() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.lifted_at IS NOT NULL OR NEW.lifted_at IS NULL OR NEW.lifted_by IS NULL THEN
            RAISE EXCEPTION 'a legal hold is lifted once, by someone'
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$;
    CREATE FUNCTION check_verification() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.status <> 'running' OR NEW.id <> OLD.id OR NEW.kind <> OLD.kind
            OR NEW.started_at <> OLD.started_at OR NEW.from_size <> OLD.from_size
            OR NEW.to_size <> OLD.to_size THEN
            RAISE EXCEPTION 'a verification is recorded once it ends'
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER verifications_end_once BEFORE UPDATE ON verifications
        FOR EACH ROW EXECUTE FUNCTION check_verification();
    CREATE TRIGGER verifications_not_deleted BEFORE DELETE ON verifications
        FOR EACH ROW EXECUTE FUNCTION refuse_change();
    CREATE TRIGGER holds_lifted_once BEFORE UPDATE ON holds
        FOR EACH ROW EXECUTE FUNCTION check_lift();
    CREATE TRIGGER entries_not_updated BEFORE UPDATE ON entries
        FOR EACH ROW EXECUTE FUNCTION refuse_change();
    CREATE TRIGGER entries_not_truncated BEFORE TRUNCATE ON entries
        FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
    CREATE TRIGGER entries_cut_as_a_prefix AFTER DELETE ON entries
        REFERENCING OLD TABLE AS cut FOR EACH STATEMENT EXECUTE FUNCTION check_cut();
    CREATE TRIGGER genesis_moves_forward BEFORE INSERT ON genesis
        FOR EACH ROW EXECUTE FUNCTION check_genesis();
    CREATE TRIGGER tree_not_changed BEFORE UPDATE OR DELETE ON tree
        FOR EACH ROW EXECUTE FUNCTION refuse_change();
    CREATE TRIGGER checkpoints_not_changed BEFORE UPDATE OR DELETE ON checkpoints
        FOR EACH ROW EXECUTE FUNCTION refuse_change();
    CREATE TRIGGER genesis_not_changed BEFORE UPDATE OR DELETE ON genesis
        FOR EACH ROW EXECUTE FUNCTION refuse_change();
    CREATE TRIGGER quarantine_not_changed BEFORE UPDATE OR DELETE ON quarantine
        FOR EACH ROW EXECUTE FUNCTION refuse_change();
    CREATE TRIGGER holds_not_deleted BEFORE DELETE ON holds
        FOR EACH ROW EXECUTE FUNCTION refuse_change();
    DO $$
    DECLARE
        name text;
    BEGIN
        FOREACH name IN ARRAY ARRAY[
            'tree', 'checkpoints', 'genesis', 'quarantine', 'holds', 'verifications'
        ] LOOP
            EXECUTE format(
                'CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                'FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()',
                name || '_not_truncated', name
            );
        END LOOP;
    END $$;
    """,
    # Query and filtered export (GET /audit/events, GET /audit/export): every filter has an
    # index in sequence order. A text column is indexed on its first 256 characters (a btree
    # row holds at most 2704 bytes, and a resource, a secret's path say, has no bound), and a
    # lookup matches that key, then the whole text; action and result also serve prefix
    # filters (vm.export*, failure) as ranges, whatever the database's collation.
    """
    CREATE INDEX entries_by_user ON entries (left("user", 256), sequence);
    CREATE INDEX entries_by_resource ON entries (left(resource, 256), sequence);
    CREATE INDEX entries_by_request_id ON entries (left(request_id, 256), sequence);
    CREATE INDEX entries_by_source_ip ON entries (left(source_ip, 256), sequence);
    CREATE INDEX entries_by_action ON entries (left(action, 256) text_pattern_ops, sequence);
    CREATE INDEX entries_by_result ON entries (left(result, 256) text_pattern_ops, sequence);
    CREATE INDEX entries_by_timestamp ON entries (timestamp, sequence);
    """,
]
GRANTS = {
    # The service: chain entries and their tree, keep checkpoints and refused events, place
    # and lift legal holds; read everything. Never UPDATE or DELETE what it chained.
    "service": """
        GRANT SELECT, INSERT ON entries, tree, checkpoints, quarantine TO {role};
        GRANT SELECT ON genesis, schema_migrations TO {role};
        GRANT SELECT, INSERT, UPDATE (lifted_by, lifted_at) ON holds TO {role};
        GRANT SELECT, INSERT, UPDATE ON verifications TO {role};
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA audit TO {role};
    """,
    # The retention job: sign the genesis, chain the record of the cut, cut the prefix.
    "retention": """
        GRANT SELECT, INSERT ON entries, tree, checkpoints, genesis TO {role};
        GRANT DELETE ON entries TO {role};
        GRANT SELECT ON holds, schema_migrations TO {role};
    """,
}
_CATCH_UP_BATCH = 5000
CHAIN_LOCK = 0x41554454  # "AUDT": serialises appends across audit replicas.
LOCK_WAIT_SECONDS = 30
"""Longest wait of an append for the chain lock (a retention step takes about a second)."""
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
            return await append_in(conn, batch, quarantine)

    async def page(
        self, *, after_sequence: int, limit: int, where: EntryFilter = EVERY_ENTRY
    ) -> list[ChainedEntry]:
        """One page; a filtered one as ``postgres_query`` finds it, through the filters' indexes."""
        if where.narrows:
            async with self._pool.acquire() as conn:
                rows = await filtered_page(
                    conn, _COLUMNS, where, after_sequence=after_sequence, limit=limit
                )
            return [_entry(row) for row in rows]
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
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
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
            nodes = await stored_nodes(conn, root_nodes(size))
        return TreeHead(
            size=size,
            root=root_at(size, nodes),
            head=GENESIS_HASH if head is None else head["hash"],
        )

    async def tree_nodes(self, nodes: Iterable[Node]) -> dict[Node, bytes]:
        """One query."""
        async with self._pool.acquire() as conn:
            return await stored_nodes(conn, set(nodes))

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

    # ---- retention's genesis and legal holds (decision 0048) ------------------------------

    async def genesis(self) -> GenesisPoint | None:
        """The newest genesis, its checkpoint and frontier read in one snapshot."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            return await genesis_of(conn)

    async def holds(self) -> list[Hold]:
        """Oldest first."""
        rows = await self._pool.fetch(f"SELECT {HOLD_COLUMNS} FROM audit.holds ORDER BY placed_at")
        return [Hold(**dict(row)) for row in rows]

    async def place_hold(self, hold: Hold, *, record: EntryFields) -> None:
        """The hold and its entry in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO audit.holds (id, reason, placed_by, placed_at) "
                "VALUES ($1, $2, $3, $4)",
                hold.id,
                hold.reason,
                hold.placed_by,
                hold.placed_at,
            )
            await append_in(conn, [record])

    async def lift_hold(self, hold: Hold, *, record: EntryFields) -> bool:
        """Lifted once: a hold lifted already, or none of that id, is False."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE audit.holds SET lifted_by = $2, lifted_at = $3 "
                "WHERE id = $1 AND lifted_at IS NULL",
                hold.id,
                hold.lifted_by,
                hold.lifted_at,
            )
            if status != "UPDATE 1":
                return False
            await append_in(conn, [record])
            return True

    # ---- verifications (decision 0048) ----------------------------------------------------

    async def save_verification(self, run: VerificationRun) -> None:
        """Insert, or update while it runs."""
        problems = json.dumps([problem.__dict__ for problem in run.problems])
        await self._pool.execute(
            f"INSERT INTO audit.verifications ({_VERIFICATION_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14) "
            "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, "
            "updated_at = EXCLUDED.updated_at, finished_at = EXCLUDED.finished_at, "
            "checked = EXCLUDED.checked, valid = EXCLUDED.valid, "
            "latest_checkpoint = EXCLUDED.latest_checkpoint, problems = EXCLUDED.problems, "
            "problems_not_listed = EXCLUDED.problems_not_listed "
            "WHERE audit.verifications.status = 'running'",
            run.id,
            run.kind,
            run.status,
            run.requested_by,
            run.started_at,
            run.updated_at,
            run.finished_at,
            run.from_size,
            run.to_size,
            run.checked,
            run.valid,
            run.latest_checkpoint,
            problems,
            run.problems_not_listed,
        )

    async def verification(self, run_id: str) -> VerificationRun | None:
        """One."""
        row = await self._pool.fetchrow(
            f"SELECT {_VERIFICATION_COLUMNS} FROM audit.verifications WHERE id = $1", run_id
        )
        return None if row is None else _verification(row)

    async def verifications(self, *, limit: int) -> list[VerificationRun]:
        """Newest first."""
        rows = await self._pool.fetch(
            f"SELECT {_VERIFICATION_COLUMNS} FROM audit.verifications "
            "ORDER BY started_at DESC LIMIT $1",
            limit,
        )
        return [_verification(row) for row in rows]

    async def verified_checkpoint(self) -> int:
        """From the partial index of valid runs."""
        value = await self._pool.fetchval(
            "SELECT max(latest_checkpoint) FROM audit.verifications WHERE valid"
        )
        return 0 if value is None else int(value)


async def append_in(
    conn: asyncpg.Connection,
    batch: Sequence[EntryFields],
    quarantine: Sequence[QuarantinedEvent] = (),
) -> list[ChainedEntry]:
    """Chain ``batch`` after the head, inside the caller's transaction, under the chain lock.

    A batch waits at most LOCK_WAIT for the lock: then it fails, its deliveries go back to
    the queue and the consumer logs it, instead of waiting unseen for ever.
    """
    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'")
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
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
HOLD_COLUMNS = "id, reason, placed_by, placed_at, lifted_by, lifted_at"
_VERIFICATION_COLUMNS = (
    "id, kind, status, requested_by, started_at, updated_at, finished_at, from_size, to_size, "
    "checked, valid, latest_checkpoint, problems, problems_not_listed"
)


def _verification(row: Any) -> VerificationRun:
    values = dict(row)
    values["problems"] = tuple(Problem(**item) for item in json.loads(values["problems"]))
    return VerificationRun(**values)


async def genesis_of(conn: asyncpg.Connection) -> GenesisPoint | None:
    """The newest genesis with its checkpoint and the tree's compact range at its size."""
    row = await conn.fetchrow(
        f"SELECT {', '.join('c.' + c for c in _CHECKPOINT_COLUMNS.split(', '))} "
        "FROM audit.genesis g JOIN audit.checkpoints c ON c.size = g.size "
        "ORDER BY g.size DESC LIMIT 1"
    )
    if row is None:
        return None
    checkpoint = _checkpoint(row)
    frontier = await frontier_at(conn, checkpoint.checkpoint.size)
    return GenesisPoint(checkpoint=checkpoint, frontier=frontier)


async def frontier_at(conn: asyncpg.Connection, size: int) -> tuple[bytes, ...]:
    """The perfect subtrees' roots the tree at ``size`` folds from, largest first."""
    wanted = sorted(root_nodes(size), key=lambda node: -node[0])
    found = await stored_nodes(conn, set(wanted))
    if len(found) != len(wanted):
        raise RuntimeError(f"the audit tree lacks nodes of its first {size} leaves")
    return tuple(found[node] for node in wanted)


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


async def stored_nodes(conn: asyncpg.Connection, wanted: set[Node]) -> dict[Node, bytes]:
    """The stored perfect subtrees among ``wanted``, in one query."""
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
    found = await stored_nodes(conn, set(wanted))
    if len(found) != len(wanted):
        raise RuntimeError(f"the audit tree lacks nodes of its first {size} leaves")
    return TreeBuilder(size, [found[node] for node in wanted])


def _entry(row: Any) -> ChainedEntry:
    return ChainedEntry(**dict(row))
