"""Request/reply subscribers of the secrets service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    CredentialValue,
    ListSecretsRequest,
    PutSecretRequest,
    ResolveCredentialRequest,
    RotateSecretRequest,
    SecretMetadata,
    SecretPathRequest,
    SecretRotation,
)
from hypersdk_kit.bus import Authorizer, current_message, serve_rpc
from hypersdk_kit.guard import QueuedGrace, RequestGuard
from hypersdk_secrets.core.service import SecretsService

SECRETS_MANAGE = frozenset({Permission.SECRETS_MANAGE.value})
# Registering a provider checks that its credential reference exists (metadata only).
DESCRIBE = SECRETS_MANAGE | {Permission.PROVIDERS_CONFIGURE.value}
# Browsing a provider's VMs or exporting one opens a session with its credential.
RESOLVE = frozenset({Permission.VMS_BROWSE.value, Permission.VMS_EXPORT.value})


@dataclass(frozen=True)
class CredentialReaders:
    """Admits a credential read only from a reader's broker login, then as any guarded request.

    The AMQP ``user_id`` of the request is the login of the connection that published it
    (RabbitMQ refuses any other), so only the exporter's own account can ask; and it can ask
    only on behalf of a sealed request whose grant names the read (decision 0033).
    """

    guard: RequestGuard
    readers: frozenset[str]
    login: Callable[[], str | None]
    queued: QueuedGrace | None = None

    async def authorize(
        self,
        *,
        operation: str,
        context: RequestContext,
        permissions: frozenset[str],
        target: str | None = None,
    ) -> dict[str, Any]:
        """The grant's claims, if the caller is a reader and the request is authorized."""
        if self.login() not in self.readers:
            await self.guard.refuse(operation=operation, reason="not_a_reader", context=context)
        return await self.guard.authorize(
            operation=operation,
            context=context,
            permissions=permissions,
            target=target,
            queued=self.queued,
        )


def register_rpc(
    broker: RabbitBroker,
    secrets: SecretsService,
    *,
    guard: RequestGuard,
    credential_readers: frozenset[str] = frozenset(),
    queued_export_grace_seconds: int = 0,
) -> None:
    """Answer the secrets questions on their request queues."""

    def caller_login() -> str | None:
        user_id = current_message(broker).raw_message.user_id
        return None if user_id is None else str(user_id)

    readers: Authorizer = CredentialReaders(
        guard=guard,
        readers=credential_readers,
        login=caller_login,
        # The worker of a queued export reads its provider's credential with the command's
        # seal and grant, which may have expired while the job waited (decision 0033).
        queued=QueuedGrace(
            sealed_operation=RpcQueue.EXPORTER_CREATE_EXPORT,
            grace_seconds=queued_export_grace_seconds,
        ),
    )

    async def resolve_credential(request: ResolveCredentialRequest) -> CredentialValue:
        return await secrets.resolve_credential(
            request.path, reader=caller_login(), context=request.context
        )

    async def rotate_secret(request: RotateSecretRequest) -> SecretRotation:
        return await secrets.rotate(request.path, request.data, request.context)

    async def put_secret(request: PutSecretRequest) -> SecretMetadata:
        return await secrets.put(request.path, request.data, request.context)

    async def describe_secret(request: SecretPathRequest) -> SecretMetadata:
        return await secrets.describe(request.path)

    async def list_secrets(request: ListSecretsRequest) -> list[SecretMetadata]:
        return await secrets.list()

    async def delete_secret(request: SecretPathRequest) -> None:
        await secrets.delete(request.path, request.context)

    serve_rpc(
        broker,
        RpcQueue.SECRETS_PUT,
        PutSecretRequest,
        put_secret,
        permissions=SECRETS_MANAGE,
        authorizer=guard,
    )
    serve_rpc(
        broker,
        RpcQueue.SECRETS_ROTATE,
        RotateSecretRequest,
        rotate_secret,
        permissions=SECRETS_MANAGE,
        authorizer=guard,
    )
    serve_rpc(
        broker,
        RpcQueue.SECRETS_DESCRIBE,
        SecretPathRequest,
        describe_secret,
        permissions=DESCRIBE,
        authorizer=guard,
    )
    serve_rpc(
        broker,
        RpcQueue.SECRETS_RESOLVE_CREDENTIAL,
        ResolveCredentialRequest,
        resolve_credential,
        permissions=RESOLVE,
        authorizer=readers,
    )
    serve_rpc(
        broker,
        RpcQueue.SECRETS_LIST,
        ListSecretsRequest,
        list_secrets,
        permissions=SECRETS_MANAGE,
        authorizer=guard,
    )
    serve_rpc(
        broker,
        RpcQueue.SECRETS_DELETE,
        SecretPathRequest,
        delete_secret,
        permissions=SECRETS_MANAGE,
        authorizer=guard,
    )
