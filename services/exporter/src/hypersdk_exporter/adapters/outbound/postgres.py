"""PostgreSQL adapters of the exporter service (schema ``exporter``)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from hypersdk_contracts.events import Artifact
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.core.models import Job, Provider
from hypersdk_exporter.ports.outbound import JobStore, ProviderStore
from hypersdk_kit.database import Database
from hypersdk_kit.outbox import OUTBOX_MIGRATION

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
]
_JOB_COLUMNS = (
    "id::text AS id, provider, vm, format, status, progress, error, artifacts, requested_by,"
    " created_at, updated_at"
)


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
    """Jobs in ``exporter.jobs``."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def add(self, job: Job) -> None:
        """Insert."""
        await self._pool.execute(
            "INSERT INTO exporter.jobs (id, provider, vm, format, status, progress, error,"
            " artifacts, requested_by, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11)",
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

    async def recent(self, *, limit: int) -> list[Job]:
        """Newest first."""
        rows = await self._pool.fetch(
            f"SELECT {_JOB_COLUMNS} FROM exporter.jobs ORDER BY created_at DESC LIMIT $1", limit
        )
        return [_job(row) for row in rows]

    async def update(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: int | None = None,
        error: str | None = None,
        artifacts: list[Artifact] | None = None,
    ) -> Job:
        """Set the given columns and ``updated_at``."""
        row = await self._pool.fetchrow(
            "UPDATE exporter.jobs SET status = coalesce($2, status),"
            " progress = coalesce($3, progress), error = coalesce($4, error),"
            " artifacts = coalesce($5::jsonb, artifacts), updated_at = now()"
            f" WHERE id = $1::uuid RETURNING {_JOB_COLUMNS}",
            job_id,
            status.value if status else None,
            progress,
            error,
            None if artifacts is None else json.dumps([a.model_dump() for a in artifacts]),
        )
        assert row is not None
        return _job(row)


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
