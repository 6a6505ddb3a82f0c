"""Request/reply subscribers of the secrets service."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    ListSecretsRequest,
    PutSecretRequest,
    SecretMetadata,
    SecretPathRequest,
)
from hypersdk_kit.bus import Authorizer, serve_rpc
from hypersdk_secrets.core.service import SecretsService

SECRETS_MANAGE = frozenset({Permission.SECRETS_MANAGE.value})
# Registering a provider checks that its credential reference exists (metadata only).
DESCRIBE = SECRETS_MANAGE | {Permission.PROVIDERS_CONFIGURE.value}


def register_rpc(broker: RabbitBroker, secrets: SecretsService, *, guard: Authorizer) -> None:
    """Answer the secrets questions on their request queues."""

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
        RpcQueue.SECRETS_DESCRIBE,
        SecretPathRequest,
        describe_secret,
        permissions=DESCRIBE,
        authorizer=guard,
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
