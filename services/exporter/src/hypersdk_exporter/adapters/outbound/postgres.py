"""PostgreSQL adapters of the exporter service (schema ``exporter``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from hypersdk_contracts.events import Artifact
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.core.jobs import Job, JobAction, JobQuery, JobTransition
from hypersdk_exporter.core.models import Provider
from hypersdk_exporter.ports.outbound import JobStore, ProviderStore
from hypersdk_kit.database import Database
from hypersdk_kit.outbox import OUTBOX_DEAD_MIGRATION, OUTBOX_MIGRATION

SCHEMA = "exporter"
MIGRATIONS = [
    """
    CREATE TABLE providers (
        name text PRIMARY KEY,
        type text NOT NULL,
        config jsonb NOT NULL,
        credential_ref text,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE jobs (
        id uuid PRIMARY KEY,
        provider text NOT NULL,
        vm text NOT NULL,
        format text NOT NULL,
        status text NOT NULL,
        progress int NOT NULL CHECK (progress BETWEEN 0 AND 100),
        error text,
        artifacts jsonb NOT NULL DEFAULT '[]',
        requested_by text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX jobs_created_at ON jobs (created_at DESC);
    """,
    OUTBOX_MIGRATION,
    # Jobs that never hang and never lie (decisions 0036 and 0037): a version for
    # compare-and-set moves, attempts, the worker's heartbeat, cancellation, idempotency
    # keys, and the history of every transition (the change-management record).
    """
    ALTER TABLE jobs
        ADD COLUMN version int NOT NULL DEFAULT 0,
        ADD COLUMN error_detail text,
        ADD COLUMN attempts int NOT NULL DEFAULT 0,
        ADD COLUMN cancel_requested_by text,
        ADD COLUMN started_at timestamptz,
        ADD COLUMN finished_at timestamptz,
        ADD COLUMN heartbeat_at timestamptz,
        ADD COLUMN idempotency_key text,
        ADD COLUMN request_digest text,
        ADD CONSTRAINT jobs_status_known
            CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'));
    DROP INDEX jobs_created_at;
    CREATE INDEX jobs_created_at ON jobs (created_at DESC, id DESC);
    CREATE INDEX jobs_status ON jobs (status, created_at DESC);
    CREATE INDEX jobs_provider ON jobs (provider, created_at DESC);
    CREATE INDEX jobs_requested_by ON jobs (requested_by, created_at DESC);
    CREATE INDEX jobs_running_heartbeat ON jobs (heartbeat_at) WHERE status = 'running';
    CREATE UNIQUE INDEX jobs_idempotency_key
        ON jobs (coalesce(requested_by, ''), idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE TABLE job_history (
        id bigserial PRIMARY KEY,
        job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at timestamptz NOT NULL,
        action text NOT NULL,
        status text NOT NULL,
        actor text,
        reason text,
        detail text CHECK (length(detail) <= 500)
    );
    CREATE INDEX job_history_job ON job_history (job_id, id);
    INSERT INTO job_history (job_id, at, action, status, actor)
        SELECT id, created_at, 'requested', 'queued', requested_by FROM jobs;
    """,
    OUTBOX_DEAD_MIGRATION,
    # A job whose command never reached the work queue (its exporter stopped between the
    # commit and the broker's confirm) is found by the sweeper and ends failed.
    """
    ALTER TABLE jobs ADD COLUMN dispatched_at timestamptz;
    UPDATE jobs SET dispatched_at = created_at;
    CREATE INDEX jobs_undispatched ON jobs (created_at)
        WHERE status = 'queued' AND dispatched_at IS NULL;
    """,
]
_JOB_COLUMNS = (
    "id::text AS id, provider, vm, format, status, progress, error, artifacts, requested_by,"
    " created_at, updated_at, version, error_detail, attempts, cancel_requested_by, started_at,"
    " finished_at, heartbeat_at, idempotency_key, request_digest, dispatched_at"
)
_PROVIDER_LOCK = 0x48534450  # "HSDP": advisory lock namespace of provider job counts


class PostgresProviderStore(ProviderStore):
    """Providers in ``exporter.providers``."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def add(self, provider: Provider) -> None:
        """Insert or refuse a duplicate."""
        try:
            await self._pool.execute(
                "INSERT INTO exporter.providers (name, type, config, credential_ref, created_at)"
                " VALUES ($1, $2, $3::jsonb, $4, $5)",
                provider.name,
                provider.type,
                json.dumps(provider.config),
                provider.credential_ref,
                provider.created_at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise ProviderStore.ProviderExistsError(provider.name) from exc

    async def get(self, name: str) -> Provider | None:
        """One provider."""
        row = await self._pool.fetchrow("SELECT * FROM exporter.providers WHERE name = $1", name)
        return None if row is None else _provider(row)

    async def list(self) -> list[Provider]:
        """By name."""
        rows = await self._pool.fetch("SELECT * FROM exporter.providers ORDER BY name")
        return [_provider(row) for row in rows]

    async def replace(self, provider: Provider) -> bool:
        """Replace type, config and credential reference of an existing provider."""
        status = await self._pool.execute(
            "UPDATE exporter.providers SET type = $2, config = $3::jsonb, credential_ref = $4"
            " WHERE name = $1",
            provider.name,
            provider.type,
            json.dumps(provider.config),
            provider.credential_ref,
        )
        return bool(status.endswith(" 1"))

    async def remove(self, name: str) -> bool:
        """Delete."""
        status = await self._pool.execute("DELETE FROM exporter.providers WHERE name = $1", name)
        return bool(status.endswith(" 1"))


class PostgresJobStore(JobStore):
    """Jobs in ``exporter.jobs``, their transitions in ``exporter.job_history``."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def add(self, job: Job, transition: JobTransition) -> None:
        """Insert the job and its first record together."""
        async with self._pool.transaction():
            try:
                await self._pool.execute(
                    "INSERT INTO exporter.jobs (id, provider, vm, format, status, progress, error,"
                    " artifacts, requested_by, created_at, updated_at, version, attempts,"
                    " idempotency_key, request_digest)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13,"
                    " $14, $15)",
                    job.id,
                    job.provider,
                    job.vm,
                    job.format.value,
                    job.status.value,
                    job.progress,
                    job.error,
                    json.dumps([a.model_dump() for a in job.artifacts]),
                    job.requested_by,
                    job.created_at,
                    job.updated_at,
                    job.version,
                    job.attempts,
                    job.idempotency_key,
                    job.request_digest,
                )
            except asyncpg.UniqueViolationError as exc:
                raise JobStore.DuplicateKeyError(job.idempotency_key) from exc
            await self._record(job.id, transition)

    async def _record(self, job_id: str, transition: JobTransition) -> None:
        await self._pool.execute(
            "INSERT INTO exporter.job_history (job_id, at, action, status, actor, reason, detail)"
            " VALUES ($1::uuid, $2, $3, $4, $5, $6, $7)",
            job_id,
            transition.at,
            transition.action.value,
            transition.status.value,
            transition.actor,
            transition.reason,
            transition.detail,
        )

    async def get(self, job_id: str) -> Job | None:
        """One job (a malformed id is simply not found)."""
        try:
            row = await self._pool.fetchrow(
                f"SELECT {_JOB_COLUMNS} FROM exporter.jobs WHERE id = $1::uuid", job_id
            )
        except asyncpg.DataError:
            return None
        return None if row is None else _job(row)

    async def find_by_key(self, *, requested_by: str | None, key: str) -> Job | None:
        """By the unique (requester, key) index."""
        row = await self._pool.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM exporter.jobs"
            " WHERE coalesce(requested_by, '') = coalesce($1, '') AND idempotency_key = $2",
            requested_by,
            key,
        )
        return None if row is None else _job(row)

    async def history(self, job_id: str) -> list[JobTransition]:
        """Oldest first."""
        try:
            rows = await self._pool.fetch(
                "SELECT at, action, status, actor, reason, detail FROM exporter.job_history"
                " WHERE job_id = $1::uuid ORDER BY id",
                job_id,
            )
        except asyncpg.DataError:
            return []
        return [
            JobTransition(
                at=row["at"],
                action=JobAction(row["action"]),
                status=JobStatus(row["status"]),
                actor=row["actor"],
                reason=row["reason"],
                detail=row["detail"],
            )
            for row in rows
        ]

    async def page(self, query: JobQuery) -> list[Job]:
        """Keyset paging on (created_at, id), newest first; filters as parameters."""
        conditions: list[str] = []
        args: list[Any] = []

        def where(condition: str, *values: Any) -> None:
            numbers = [f"${len(args) + i + 1}" for i in range(len(values))]
            conditions.append(condition.format(*numbers))
            args.extend(values)

        if query.after is not None:
            where("(created_at, id) < ({}, {}::uuid)", query.after.created_at, query.after.id)
        if query.status is not None:
            where("status = {}", query.status.value)
        if query.provider is not None:
            where("provider = {}", query.provider)
        if query.requested_by is not None:
            where("requested_by = {}", query.requested_by)
        if query.created_after is not None:
            where("created_at >= {}", query.created_after)
        if query.created_before is not None:
            where("created_at < {}", query.created_before)
        clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        args.append(query.limit)
        rows = await self._pool.fetch(
            f"SELECT {_JOB_COLUMNS} FROM exporter.jobs{clause}"
            f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
        return [_job(row) for row in rows]

    async def save(self, job: Job, transition: JobTransition | None) -> None:
        """Compare-and-set on the version; the record in the same transaction."""
        async with self._pool.transaction():
            status = await self._pool.execute(
                "UPDATE exporter.jobs SET status = $3, progress = $4, error = $5,"
                " artifacts = $6::jsonb, updated_at = $7, version = $2 + 1, error_detail = $8,"
                " attempts = $9, cancel_requested_by = $10, started_at = $11,"
                " finished_at = $12, heartbeat_at = $13"
                " WHERE id = $1::uuid AND version = $2",
                job.id,
                job.version - 1,
                job.status.value,
                job.progress,
                job.error,
                json.dumps([a.model_dump() for a in job.artifacts]),
                job.updated_at,
                job.error_detail,
                job.attempts,
                job.cancel_requested_by,
                job.started_at,
                job.finished_at,
                job.heartbeat_at,
            )
            if not status.endswith(" 1"):
                raise JobStore.StaleJobError(job.id)
            if transition is not None:
                await self._record(job.id, transition)

    async def touch(self, job_id: str, *, at: datetime) -> None:
        """Heartbeat of a running job."""
        await self._pool.execute(
            "UPDATE exporter.jobs SET heartbeat_at = $2 WHERE id = $1::uuid AND status = 'running'",
            job_id,
            at,
        )

    async def stale(self, *, before: datetime, limit: int) -> list[Job]:
        """Running jobs whose heartbeat stopped."""
        rows = await self._pool.fetch(
            f"SELECT {_JOB_COLUMNS} FROM exporter.jobs WHERE status = 'running'"
            " AND coalesce(heartbeat_at, updated_at) < $1 ORDER BY created_at LIMIT $2",
            before,
            limit,
        )
        return [_job(row) for row in rows]

    async def mark_dispatched(self, job_id: str, *, at: datetime) -> None:
        """Set once; a later call (the worker's, on receipt) keeps the first time."""
        await self._pool.execute(
            "UPDATE exporter.jobs SET dispatched_at = $2"
            " WHERE id = $1::uuid AND dispatched_at IS NULL",
            job_id,
            at,
        )

    async def undispatched(self, *, before: datetime, limit: int) -> list[Job]:
        """Queued jobs with no recorded dispatch, created before ``before``."""
        rows = await self._pool.fetch(
            f"SELECT {_JOB_COLUMNS} FROM exporter.jobs WHERE status = 'queued'"
            " AND dispatched_at IS NULL AND created_at < $1 ORDER BY created_at LIMIT $2",
            before,
            limit,
        )
        return [_job(row) for row in rows]

    async def running_count(self, provider: str) -> int:
        """Count under a transaction-scoped advisory lock on the provider's name."""
        if self._pool.in_transaction:
            await self._pool.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", _PROVIDER_LOCK, provider
            )
        count = await self._pool.fetchval(
            "SELECT count(*) FROM exporter.jobs WHERE provider = $1 AND status = 'running'",
            provider,
        )
        return int(count)


def _provider(row: Any) -> Provider:
    return Provider(
        name=row["name"],
        type=row["type"],
        config=json.loads(row["config"]),
        credential_ref=row["credential_ref"],
        created_at=row["created_at"],
    )


def _job(row: Any) -> Job:
    return Job(
        version=row["version"],
        error_detail=row["error_detail"],
        attempts=row["attempts"],
        cancel_requested_by=row["cancel_requested_by"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        heartbeat_at=row["heartbeat_at"],
        idempotency_key=row["idempotency_key"],
        request_digest=row["request_digest"],
        dispatched_at=row["dispatched_at"],
        id=row["id"],
        provider=row["provider"],
        vm=row["vm"],
        format=DiskFormat(row["format"]),
        status=JobStatus(row["status"]),
        progress=row["progress"],
        error=row["error"],
        artifacts=[Artifact.model_validate(a) for a in json.loads(row["artifacts"])],
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
