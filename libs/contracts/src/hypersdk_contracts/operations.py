"""Operations on the bus, as request seals and grants name them (docs/security.md).

An *operation* is one thing a service is asked to do: the request queue of a question
(``identity.rpc.create_user``) or the type of a command (``exporter.vm.export.requested``).
The gateway seals every request it forwards for exactly one operation and, where the operation
acts on one resource, for that resource (its *target*); the answering service checks both
against the request it received. Both sides take the target from :func:`target_of`, so they
cannot disagree about it.

A few operations make further requests with the same context (*follow-ups*): registering a
provider asks secrets whether its credential exists; issuing an API key asks policy for the
owner's permissions; queueing an export sends the command a worker runs. A follow-up is
admitted under the seal of the operation that made it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.names import RpcQueue

EXPORT_COMMAND = VmExportRequested.command_type
"""The operation a worker performs for ``exporter.jobs``: the export command's type."""


def _vm_of(message: Any) -> str:
    return f"{message.provider}/{message.vm}"


_USERNAME = attrgetter("username")
TARGETS: Mapping[str, Callable[[Any], Any]] = {
    RpcQueue.IDENTITY_CREATE_USER: _USERNAME,
    RpcQueue.IDENTITY_GET_USER: _USERNAME,
    RpcQueue.IDENTITY_UPDATE_USER: _USERNAME,
    RpcQueue.IDENTITY_DELETE_USER: _USERNAME,
    RpcQueue.IDENTITY_UNLOCK_USER: _USERNAME,
    RpcQueue.IDENTITY_REVOKE_USER_SESSIONS: _USERNAME,
    RpcQueue.IDENTITY_LIST_SESSIONS: _USERNAME,
    RpcQueue.IDENTITY_REVOKE_SESSION: attrgetter("session_id"),
    RpcQueue.IDENTITY_CREATE_API_KEY: attrgetter("owner"),
    RpcQueue.IDENTITY_LIST_API_KEYS: attrgetter("owner"),
    RpcQueue.IDENTITY_REVOKE_API_KEY: attrgetter("key_id"),
    RpcQueue.IDENTITY_ROTATE_API_KEY: attrgetter("key_id"),
    RpcQueue.POLICY_DECIDE: attrgetter("permission"),
    RpcQueue.POLICY_ASSIGN_ROLES: _USERNAME,
    RpcQueue.POLICY_ROLES_OF: _USERNAME,
    RpcQueue.POLICY_PERMISSIONS_OF: _USERNAME,
    RpcQueue.SECRETS_PUT: attrgetter("path"),
    RpcQueue.SECRETS_DELETE: attrgetter("path"),
    RpcQueue.SECRETS_DESCRIBE: attrgetter("path"),
    RpcQueue.EXPORTER_REGISTER_PROVIDER: attrgetter("name"),
    RpcQueue.EXPORTER_GET_PROVIDER: attrgetter("name"),
    RpcQueue.EXPORTER_REMOVE_PROVIDER: attrgetter("name"),
    RpcQueue.EXPORTER_UPDATE_PROVIDER: attrgetter("name"),
    RpcQueue.EXPORTER_LIST_VMS: attrgetter("provider"),
    RpcQueue.EXPORTER_GET_VM: attrgetter("vm_id"),
    RpcQueue.EXPORTER_CREATE_EXPORT: _vm_of,
    RpcQueue.EXPORTER_GET_JOB: attrgetter("job_id"),
    RpcQueue.EXPORTER_CANCEL_JOB: attrgetter("job_id"),
    EXPORT_COMMAND: _vm_of,
    **{
        queue: attrgetter("endpoint_id")
        for queue in (
            RpcQueue.WEBHOOKS_GET,
            RpcQueue.WEBHOOKS_UPDATE,
            RpcQueue.WEBHOOKS_PAUSE,
            RpcQueue.WEBHOOKS_RESUME,
            RpcQueue.WEBHOOKS_DELETE,
            RpcQueue.WEBHOOKS_ROTATE_SECRET,
            RpcQueue.WEBHOOKS_TEST,
            RpcQueue.WEBHOOKS_LIST_DEAD_LETTERS,
            RpcQueue.WEBHOOKS_REPLAY,
        )
    },
    RpcQueue.SUBSCRIPTIONS_GET: attrgetter("subscription_id"),
    RpcQueue.SUBSCRIPTIONS_DELETE: attrgetter("subscription_id"),
}
"""How to read the target of each operation that has one from its request or command."""

_RESOLVE = RpcQueue.SECRETS_RESOLVE_CREDENTIAL
FOLLOW_UPS: Mapping[str, frozenset[str]] = {
    RpcQueue.EXPORTER_REGISTER_PROVIDER: frozenset({RpcQueue.SECRETS_DESCRIBE}),
    RpcQueue.EXPORTER_UPDATE_PROVIDER: frozenset({RpcQueue.SECRETS_DESCRIBE}),
    # Opening a session to a provider reads its credential (decision 0033).
    RpcQueue.EXPORTER_LIST_VMS: frozenset({_RESOLVE}),
    RpcQueue.EXPORTER_GET_VM: frozenset({_RESOLVE}),
    RpcQueue.EXPORTER_CREATE_EXPORT: frozenset({EXPORT_COMMAND, _RESOLVE}),
    EXPORT_COMMAND: frozenset({_RESOLVE}),
    # Identity holds every key operation to what the caller and the owner may do now
    # (decision 0025), which it asks policy.
    RpcQueue.IDENTITY_CREATE_API_KEY: frozenset({RpcQueue.POLICY_PERMISSIONS_OF}),
    RpcQueue.IDENTITY_LIST_API_KEYS: frozenset({RpcQueue.POLICY_PERMISSIONS_OF}),
    RpcQueue.IDENTITY_REVOKE_API_KEY: frozenset({RpcQueue.POLICY_PERMISSIONS_OF}),
    RpcQueue.IDENTITY_ROTATE_API_KEY: frozenset({RpcQueue.POLICY_PERMISSIONS_OF}),
}
"""Operations a service performs on behalf of another, under that operation's seal."""


def target_of(operation: str, message: Any) -> str | None:
    """The resource ``message`` asks ``operation`` to act on; None if it names none."""
    read = TARGETS.get(operation)
    if read is None:
        return None
    target = read(message)
    return None if target is None else str(target)


def with_follow_ups(operations: Iterable[str]) -> frozenset[str]:
    """``operations`` and every follow-up they may make (what a grant for them must name)."""
    found: set[str] = set()
    pending = list(operations)
    while pending:
        operation = pending.pop()
        if operation not in found:
            found.add(operation)
            pending.extend(FOLLOW_UPS.get(operation, ()))
    return frozenset(found)


def follows(operation: str, sealed: str) -> bool:
    """Whether ``operation`` may run under a seal for ``sealed`` (itself or a follow-up)."""
    return operation == sealed or operation in FOLLOW_UPS.get(sealed, frozenset())
