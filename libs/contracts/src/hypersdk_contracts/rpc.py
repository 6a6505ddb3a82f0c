"""Request/reply messages: synchronous questions the gateway asks the owning services.

Each request carries the causing request's context so the answering service can put it on
the events it publishes. Replies are :class:`RpcReply`: a result or an error, never both.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from hypersdk_contracts.base import Message
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorBody
from hypersdk_contracts.events import Artifact

USERNAME_PATTERN = r"^[a-z_][a-z0-9_.-]{0,63}$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
SECRET_PATH_PATTERN = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+){0,7}$"  # noqa: S105 - a regex


class DiskFormat(StrEnum):
    """Disk formats an export can produce."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VHDX = "vhdx"
    VPC = "vpc"


class JobStatus(StrEnum):
    """Life cycle of an export job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RpcRequest(Message):
    """Base of every request: who is asking, through which API call."""

    context: RequestContext = Field(
        default_factory=RequestContext, description="The causing request."
    )


class RpcReply(Message):
    """A reply: ``result`` when ``ok``, else ``error``."""

    ok: bool = Field(description="Whether the request succeeded.")
    result: Any = Field(default=None, description="The answer, shaped per request type.")
    error: ErrorBody | None = Field(default=None, description="Why it failed.")


# ---- identity -------------------------------------------------------------------------------


class UserView(Message):
    """A user as the API shows it."""

    username: str = Field(description="Login name.")
    source: Literal["local", "pam"] = Field(description="Where the password is checked.")
    created_at: AwareDatetime = Field(description="When the account was created.")
    disabled: bool = Field(default=False, description="Whether logins are refused.")


class LoginRequest(RpcRequest):
    """Check a username and password and open a session."""

    username: str = Field(min_length=1, max_length=64, description="Login name.")
    password: str = Field(min_length=1, max_length=1024, repr=False, description="Password.")


class LoginResult(Message):
    """A new session."""

    token: str = Field(repr=False, description="Opaque session token; shown once.")
    session_id: str = Field(description="Public id of the session.")
    expires_at: AwareDatetime = Field(description="Absolute end of the session.")
    user: UserView = Field(description="Who is logged in.")


class AuthenticateRequest(RpcRequest):
    """Resolve a session token to its principal."""

    token: str = Field(min_length=1, max_length=512, repr=False, description="Session token.")


class Principal(Message):
    """An authenticated caller: a user through a session, or an API key of a user."""

    username: str = Field(description="User name (the key's owner for API keys).")
    kind: Literal["session", "apikey"] = Field(default="session", description="Credential.")
    session_id: str | None = Field(default=None, description="Session the call came through.")
    key_id: str | None = Field(default=None, description="API key the call came through.")
    scopes: list[str] | None = Field(
        default=None, description="API key scopes; None means all of the owner's permissions."
    )
    external_roles: list[str] = Field(
        default_factory=list, description="Roles from outside, e.g. the PAM group-to-role map."
    )
    assertion: str | None = Field(
        default=None, repr=False, description="Short-lived principal assertion signed by identity."
    )


class LogoutRequest(RpcRequest):
    """End the session of a token."""

    token: str = Field(min_length=1, max_length=512, repr=False, description="Session token.")


class CreateUserRequest(RpcRequest):
    """Create a local user."""

    username: str = Field(pattern=USERNAME_PATTERN, description="Login name.")
    password: str = Field(min_length=1, max_length=1024, repr=False, description="Password.")


class ListUsersRequest(RpcRequest):
    """List users."""


# ---- policy ---------------------------------------------------------------------------------


class DecideRequest(RpcRequest):
    """Ask whether a principal may use a permission on a resource."""

    username: str = Field(description="Principal.")
    permission: str = Field(description="Permission name.")
    resource: str = Field(description="What the call is about, for the audit record.")


class Decision(Message):
    """Answer to a decision request."""

    allowed: bool = Field(description="Whether the permission is granted.")
    roles: list[str] = Field(description="Roles the principal holds.")


class AssignRolesRequest(RpcRequest):
    """Replace a user's roles."""

    username: str = Field(pattern=USERNAME_PATTERN, description="User.")
    roles: list[str] = Field(description="Roles to hold from now on.")


class RolesOfRequest(RpcRequest):
    """Ask which roles a user holds."""

    username: str = Field(description="User.")


# ---- secrets --------------------------------------------------------------------------------


class SecretMetadata(Message):
    """What may be said about a secret: never its value."""

    path: str = Field(description="Path of the secret.")
    version: int = Field(description="Current version.")
    updated_at: AwareDatetime | None = Field(default=None, description="When it was last written.")


class PutSecretRequest(RpcRequest):
    """Store a new version of a secret."""

    path: str = Field(pattern=SECRET_PATH_PATTERN, description="Path of the secret.")
    data: dict[str, str] = Field(repr=False, description="Key/value pairs to store.")


class SecretPathRequest(RpcRequest):
    """A request about one secret path."""

    path: str = Field(pattern=SECRET_PATH_PATTERN, description="Path of the secret.")


class ListSecretsRequest(RpcRequest):
    """List secret metadata."""


# ---- exporter -------------------------------------------------------------------------------


class ProviderView(Message):
    """A provider connection: never its credential."""

    name: str = Field(description="Provider name.")
    type: str = Field(description="Provider type.")
    config: dict[str, str] = Field(description="Non-secret connection settings.")
    credential_ref: str | None = Field(description="Secret path of the credential.")
    created_at: AwareDatetime = Field(description="When it was registered.")


class RegisterProviderRequest(RpcRequest):
    """Register a provider connection."""

    name: str = Field(pattern=NAME_PATTERN, description="Provider name.")
    type: Literal["local"] = Field(description="Provider type.")
    config: dict[str, str] = Field(default_factory=dict, description="Connection settings.")
    credential_ref: str | None = Field(
        default=None, pattern=SECRET_PATH_PATTERN, description="Secret path of the credential."
    )


class ProviderNameRequest(RpcRequest):
    """A request about one provider."""

    name: str = Field(description="Provider name.")


class ListProvidersRequest(RpcRequest):
    """List providers."""


class DiskView(Message):
    """A VM disk."""

    name: str = Field(description="Disk file name.")
    size_bytes: int = Field(description="Virtual size in bytes.")
    format: str = Field(description="Source format.")


class VmView(Message):
    """A VM as the inventory shows it."""

    id: str = Field(description="Id unique within the platform: provider/vm.")
    name: str = Field(description="VM name in the provider.")
    provider: str = Field(description="Provider name.")
    cpus: int = Field(description="Virtual CPUs.")
    memory_mib: int = Field(description="Memory in MiB.")
    disks: list[DiskView] = Field(description="Disks of the VM.")


class ListVmsRequest(RpcRequest):
    """List VMs of one provider or of all."""

    provider: str | None = Field(default=None, description="Only this provider's VMs.")


class GetVmRequest(RpcRequest):
    """Describe one VM."""

    vm_id: str = Field(description="VM id, provider/vm.")


class CreateExportRequest(RpcRequest):
    """Queue an export of one VM."""

    provider: str = Field(description="Provider name.")
    vm: str = Field(description="VM name within the provider.")
    format: DiskFormat = Field(description="Target disk format.")


class JobView(Message):
    """An export job as the API shows it."""

    id: str = Field(description="Job id.")
    provider: str = Field(description="Provider name.")
    vm: str = Field(description="VM name.")
    format: DiskFormat = Field(description="Target format.")
    status: JobStatus = Field(description="Where the job is in its life cycle.")
    progress: int = Field(ge=0, le=100, description="Percent done.")
    error: str | None = Field(default=None, description="Reason code when failed.")
    artifacts: list[Artifact] = Field(description="Files produced.")
    requested_by: str | None = Field(description="Who asked for it.")
    created_at: AwareDatetime = Field(description="When it was queued.")
    updated_at: AwareDatetime = Field(description="Last change.")


class JobIdRequest(RpcRequest):
    """A request about one job."""

    job_id: str = Field(description="Job id.")


class ListJobsRequest(RpcRequest):
    """List jobs, newest first."""

    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")


# ---- audit ----------------------------------------------------------------------------------


class AuditEntryView(Message):
    """One entry of the audit chain."""

    sequence: int = Field(description="Position in the chain, from 1.")
    event_id: str = Field(description="Id of the event it records.")
    timestamp: AwareDatetime = Field(description="When it happened, UTC.")
    user: str | None = Field(description="User or API key id.")
    action: str = Field(description="What was done, e.g. vm.export.")
    resource: str | None = Field(description="What it was done to.")
    result: str = Field(description="success or failure: <reason>.")
    source_ip: str | None = Field(description="Client address.")
    request_id: str | None = Field(description="Request ID of the API call.")
    prev_hash: str = Field(description="Hash of the previous entry.")
    hash: str = Field(description="SHA-256 of this entry's canonical form.")


class VerifyRequest(RpcRequest):
    """Verify the whole chain."""


class VerifyResult(Message):
    """Outcome of verifying the chain."""

    valid: bool = Field(description="Whether every entry checks out.")
    entries: int = Field(description="How many entries were checked.")
    first_bad_sequence: int | None = Field(description="First entry that does not check out.")
    reason: str | None = Field(description="What is wrong with it.")


class ListAuditEventsRequest(RpcRequest):
    """Page through the chain in order."""

    after_sequence: int = Field(default=0, ge=0, description="Entries after this one.")
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")


class RoleList(Message):
    """The roles a user holds."""

    username: str = Field(description="User.")
    roles: list[str] = Field(description="Roles held, sorted.")
