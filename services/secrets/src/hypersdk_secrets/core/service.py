"""Secrets use cases: write, rotate, describe, list, delete, and the reads of services.

Events carry paths and versions, never values.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import (
    SecretDeleted,
    SecretRead,
    SecretRotated,
    SecretVersionDestroyed,
    SecretWritten,
)
from hypersdk_contracts.rpc import (
    PROVIDER_CREDENTIAL_PREFIX,
    CredentialValue,
    SecretMetadata,
    SecretRotation,
)
from hypersdk_kit.bus import EventPublisher
from hypersdk_secrets.ports.outbound import SecretManager

MAX_KEYS = 64
MAX_VALUE_BYTES = 64 * 1024


class SecretsService:
    """Front of the SecretManager port."""

    def __init__(
        self,
        *,
        manager: SecretManager,
        events: EventPublisher,
        rotation_grace: timedelta = timedelta(days=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._manager = manager
        self._events = events
        self._grace = rotation_grace
        self._clock = clock

    async def ready(self) -> bool:
        """Whether secrets can be served."""
        return await self._manager.ready()

    async def put(self, path: str, data: dict[str, str], context: RequestContext) -> SecretMetadata:
        """Store a new version."""
        _check(data)
        meta = await self._manager.put(path, data)
        await self._events.publish(
            SecretWritten(path=path, version=meta.version),
            subject=f"secret/{path}",
            context=context,
        )
        return meta

    async def describe(self, path: str) -> SecretMetadata:
        """Metadata, or not_found."""
        meta = await self._manager.describe(path)
        if meta is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No secret at that path.")
        return meta

    async def resolve_credential(
        self, path: str, *, reader: str | None = None, context: RequestContext | None = None
    ) -> CredentialValue:
        """A provider credential's values; only secrets under ``providers/`` are credentials.

        Asked by the exporter alone when it opens a provider session (decision 0033): every
        other path is not_found here, whatever it holds. Each read is an event naming the
        path, the version and the reader's broker login.
        """
        value = None
        if path.startswith(PROVIDER_CREDENTIAL_PREFIX):
            value = await self._manager.read(path)
        if value is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No provider credential at that path.")
        await self._events.publish(
            SecretRead(path=path, version=value.version, reader=reader or "unknown"),
            subject=f"secret/{path}",
            context=context,
        )
        return CredentialValue(path=path, data=value.data)

    async def rotate(
        self, path: str, data: dict[str, str], context: RequestContext
    ) -> SecretRotation:
        """A new version replaces the current one, which stays readable for the grace period.

        Readers get the new version at once (the exporter reads a credential when a job opens
        its provider); the previous one is destroyed when the grace ends (:meth:`sweep`). A
        concurrent write between reading the current version and writing is a conflict.
        """
        _check(data)
        current = await self._manager.describe(path)
        if current is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No secret at that path; PUT creates one.")
        meta = await self._manager.put(path, data, cas=current.version)
        until = self._clock() + self._grace
        await self._manager.keep_until(path, current.version, until)
        await self._events.publish(
            SecretRotated(
                path=path,
                version=meta.version,
                previous_version=current.version,
                previous_readable_until=until,
            ),
            subject=f"secret/{path}",
            context=context,
        )
        return SecretRotation(
            path=path,
            version=meta.version,
            previous_version=current.version,
            previous_readable_until=until,
        )

    async def sweep(self) -> list[tuple[str, int]]:
        """Destroy every rotated-from version whose grace has ended; what was destroyed."""
        now = self._clock()
        destroyed: list[tuple[str, int]] = []
        for grace in await self._manager.graces():
            if grace.until > now:
                continue
            await self._manager.destroy(grace.path, grace.version)
            await self._events.publish(
                SecretVersionDestroyed(path=grace.path, version=grace.version),
                subject=f"secret/{grace.path}",
                context=RequestContext(actor=None),
            )
            destroyed.append((grace.path, grace.version))
        return destroyed

    async def list(self) -> list[SecretMetadata]:
        """Metadata of every secret."""
        return await self._manager.list()

    async def delete(self, path: str, context: RequestContext) -> None:
        """Remove a secret."""
        if not await self._manager.delete(path):
            raise ServiceError(ErrorCode.NOT_FOUND, "No secret at that path.")
        await self._events.publish(
            SecretDeleted(path=path), subject=f"secret/{path}", context=context
        )


def _check(data: dict[str, str]) -> None:
    if not data or len(data) > MAX_KEYS:
        raise ServiceError(ErrorCode.VALIDATION_FAILED, f"A secret holds 1 to {MAX_KEYS} keys.")
    if any(len(value.encode()) > MAX_VALUE_BYTES for value in data.values()):
        raise ServiceError(ErrorCode.VALIDATION_FAILED, "A secret value is too large.")
