"""Secrets use cases: write, describe, list, delete; events carry paths, never values."""

from __future__ import annotations

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import SecretDeleted, SecretWritten
from hypersdk_contracts.rpc import PROVIDER_CREDENTIAL_PREFIX, CredentialValue, SecretMetadata
from hypersdk_kit.bus import EventPublisher
from hypersdk_secrets.ports.outbound import SecretManager

MAX_KEYS = 64
MAX_VALUE_BYTES = 64 * 1024


class SecretsService:
    """Front of the SecretManager port."""

    def __init__(self, *, manager: SecretManager, events: EventPublisher) -> None:
        self._manager = manager
        self._events = events

    async def ready(self) -> bool:
        """Whether secrets can be served."""
        return await self._manager.ready()

    async def put(self, path: str, data: dict[str, str], context: RequestContext) -> SecretMetadata:
        """Store a new version."""
        if not data or len(data) > MAX_KEYS:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"A secret holds 1 to {MAX_KEYS} keys.")
        if any(len(value.encode()) > MAX_VALUE_BYTES for value in data.values()):
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "A secret value is too large.")
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

    async def resolve_credential(self, path: str) -> CredentialValue:
        """A provider credential's values; only secrets under ``providers/`` are credentials.

        Asked by the exporter alone when it opens a provider session (decision 0033): every
        other path is not_found here, whatever it holds.
        """
        data = None
        if path.startswith(PROVIDER_CREDENTIAL_PREFIX):
            data = await self._manager.read(path)
        if data is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No provider credential at that path.")
        return CredentialValue(path=path, data=data)

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
