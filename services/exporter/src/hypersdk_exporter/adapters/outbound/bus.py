"""Bus adapters of the exporter: the work queue out, credential questions to secrets."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.names import EXPORT_JOBS_QUEUE, RpcQueue
from hypersdk_contracts.rpc import CredentialValue, ResolveCredentialRequest, SecretPathRequest
from hypersdk_exporter.core.models import Credential
from hypersdk_exporter.ports.outbound import CredentialDirectory, CredentialResolver, JobQueue
from hypersdk_kit.bus import RpcClient, send_command


class RabbitJobQueue(JobQueue):
    """Sends export commands to the durable ``exporter.jobs`` queue."""

    def __init__(self, broker: RabbitBroker, *, declare_queue: bool = True) -> None:
        self._broker = broker
        self._declare_queue = declare_queue

    async def enqueue(self, command: VmExportRequested, context: RequestContext) -> None:
        """Publish persistently and wait for the broker's confirm."""
        await send_command(
            self._broker,
            queue=EXPORT_JOBS_QUEUE,
            command=command,
            context=context,
            declare_queue=self._declare_queue,
        )


class RpcCredentialDirectory(CredentialDirectory):
    """Asks the secrets service whether a path exists (metadata only)."""

    def __init__(self, rpc: RpcClient) -> None:
        self._rpc = rpc

    async def exists(self, path: str, context: RequestContext) -> bool:
        """True if the secrets service describes the path."""
        try:
            await self._rpc.call(
                RpcQueue.SECRETS_DESCRIBE, SecretPathRequest(path=path, context=context)
            )
        except ServiceError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                return False
            raise
        return True


class RpcCredentialResolver(CredentialResolver):
    """Reads a provider credential from the secrets service, for the request being served.

    The secrets service answers only this service's broker login, and only under a seal and
    grant that name the read (decision 0033). The value lives in the returned Credential and
    is never logged: errors carry the secrets service's code, never the reply.
    """

    def __init__(self, rpc: RpcClient) -> None:
        self._rpc = rpc

    async def resolve(self, ref: str, context: RequestContext) -> Credential:
        """The credential at ``ref``."""
        result = await self._rpc.call(
            RpcQueue.SECRETS_RESOLVE_CREDENTIAL, ResolveCredentialRequest(path=ref, context=context)
        )
        value = CredentialValue.model_validate(result)
        return Credential(ref=ref, values=dict(value.data))
