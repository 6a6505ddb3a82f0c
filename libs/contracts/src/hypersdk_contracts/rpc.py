"""Request/reply messages: synchronous questions the gateway asks the owning services.

Each request carries the causing request's context so the answering service can put it on
the events it publishes. Replies are :class:`RpcReply`: a result or an error, never both.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from hypersdk_contracts.base import INT64_MAX, Message
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorBody
from hypersdk_contracts.events import Artifact

USERNAME_PATTERN = r"^[a-z_][a-z0-9_.-]{0,63}$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
SECRET_PATH_PATTERN = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+){0,7}$"  # noqa: S105 - a regex
OPERATION_PATTERN = r"^[a-z][a-z0-9_.]{0,127}$"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class DiskFormat(StrEnum):
    """Disk formats an export can produce."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VHDX = "vhdx"
    VPC = "vpc"
    OVA = "ova"


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
    generation: int = Field(
        ge=1,
        le=INT64_MAX,
        description=(
            "Which account of this name: 1 for the first, one more each time the name is"
            " created again (identity's database orders them, decision 0041)."
        ),
    )
    source: Literal["local", "pam"] = Field(description="Where the password is checked.")
    created_at: AwareDatetime = Field(description="When the account was created.")
    disabled: bool = Field(default=False, description="Whether logins are refused.")
    external_roles: list[str] = Field(
        default_factory=list, description="Roles from the PAM group map (PAM users only)."
    )
    locked_until: AwareDatetime | None = Field(
        default=None, description="Logins are refused until then after repeated failures."
    )


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
    valid_until: AwareDatetime | None = Field(
        default=None,
        description="When the credential stops working at the latest (session expiry, key "
        "expiry or the end of a rotation's grace); None: no fixed end.",
    )


class LogoutRequest(RpcRequest):
    """End the session of a token."""

    token: str = Field(min_length=1, max_length=512, repr=False, description="Session token.")


class CreateUserRequest(RpcRequest):
    """Create a local user (with a password) or a PAM user (without: PAM checks it)."""

    username: str = Field(pattern=USERNAME_PATTERN, description="Login name.")
    password: str | None = Field(
        default=None, min_length=1, max_length=1024, repr=False, description="Password."
    )
    source: Literal["local", "pam"] = Field(
        default="local", description="Where the password is checked."
    )


class ListUsersRequest(RpcRequest):
    """List users."""


class UserNameRequest(RpcRequest):
    """A request about one user: get, delete, unlock."""

    username: str = Field(min_length=1, max_length=64, description="Login name.")


class UpdateUserRequest(RpcRequest):
    """Disable or enable a user; disabling ends their sessions at once."""

    username: str = Field(min_length=1, max_length=64, description="Login name.")
    disabled: bool = Field(description="Whether logins are refused from now on.")


class RevokeUserSessionsRequest(RpcRequest):
    """End every session of a user, e.g. after their roles changed."""

    username: str = Field(min_length=1, max_length=64, description="Login name.")
    reason: Literal["roles_changed"] = Field(description="Why the sessions end.")


class RevokedSessions(Message):
    """How many sessions a request ended."""

    username: str = Field(description="Whose sessions.")
    sessions_revoked: int = Field(ge=0, description="Sessions ended.")


class RefreshRequest(RpcRequest):
    """Swap a session token for a new one; the old one stops working at once."""

    token: str = Field(min_length=1, max_length=512, repr=False, description="Session token.")


class SessionView(Message):
    """A session as its owner sees it: never its token."""

    id: str = Field(description="Public id of the session.")
    created_at: AwareDatetime = Field(description="When it was opened.")
    last_seen_at: AwareDatetime = Field(description="Last authenticated call.")
    expires_at: AwareDatetime = Field(description="Absolute end.")
    idle_expires_at: AwareDatetime = Field(description="End if there is no activity until then.")
    current: bool = Field(description="Whether this call came through it.")


class ListSessionsRequest(RpcRequest):
    """The live sessions of a user."""

    username: str = Field(min_length=1, max_length=64, description="Owner.")
    current_session_id: str | None = Field(default=None, description="Session of this call.")


class RevokeSessionRequest(RpcRequest):
    """End one session of its owner; another user's session is not found."""

    username: str = Field(min_length=1, max_length=64, description="Owner.")
    session_id: str = Field(min_length=1, max_length=64, description="Public id of the session.")


class AuthenticateApiKeyRequest(RpcRequest):
    """Resolve an API key to its principal."""

    key: str = Field(min_length=1, max_length=128, repr=False, description="The API key.")


class ApiKeyView(Message):
    """An API key as the API lists it: never the key."""

    id: str = Field(description="Public id of the key.")
    name: str = Field(description="Label.")
    owner: str = Field(description="User the key acts as.")
    hint: str = Field(description="Last four characters (of the checksum), to recognise it.")
    scopes: list[str] = Field(description="Permissions the key is limited to.")
    created_at: AwareDatetime = Field(description="When it was issued.")
    created_by: str | None = Field(description="Who issued it.")
    expires_at: AwareDatetime | None = Field(description="When it stops working, if ever.")
    last_used_at: AwareDatetime | None = Field(description="Last use (to the minute).")
    revoked_at: AwareDatetime | None = Field(
        description="When it stopped (or, within a rotation grace period, will stop) working."
    )
    replaced_by: str | None = Field(description="The key that replaced it on rotation.")


class CreateApiKeyRequest(RpcRequest):
    """Issue an API key; identity checks the scopes against the owner's permissions."""

    owner: str = Field(pattern=USERNAME_PATTERN, description="User the key acts as.")
    name: str = Field(min_length=1, max_length=64, description="Label.")
    scopes: list[str] = Field(min_length=1, max_length=10, description="Permission names.")
    expires_at: AwareDatetime | None = Field(default=None, description="Optional end.")


class IssuedApiKey(Message):
    """A new API key: the only time the key itself is shown."""

    key: str = Field(repr=False, description="The API key; store it now, it is never shown again.")
    api_key: ApiKeyView = Field(description="What the key is.")


class ListApiKeysRequest(RpcRequest):
    """List API keys that work (or still work during a rotation grace period)."""

    owner: str | None = Field(default=None, max_length=64, description="Only this user's keys.")


class ApiKeyIdRequest(RpcRequest):
    """A request about one API key: get, revoke."""

    key_id: str = Field(min_length=1, max_length=64, description="Public id of the key.")


class RotateApiKeyRequest(RpcRequest):
    """Issue a replacement key; the old one dies now or after a grace period."""

    key_id: str = Field(min_length=1, max_length=64, description="Public id of the key.")
    grace_seconds: int = Field(
        default=0, ge=0, le=7 * 24 * 3600, description="How long the old key keeps working."
    )


# ---- policy ---------------------------------------------------------------------------------


class DecideRequest(RpcRequest):
    """Ask whether a principal may use a permission on a resource."""

    username: str = Field(description="Principal.")
    permission: str = Field(description="Permission name.")
    resource: str = Field(description="What the call is about, for the audit record.")
    operations: list[Annotated[str, StringConstraints(pattern=OPERATION_PATTERN)]] = Field(
        default_factory=list,
        max_length=32,
        description="Operations (request queues, command types) the grant is for: those the "
        "API call makes and their follow-ups; a grant allows no other.",
    )


class Decision(Message):
    """Answer to a decision request."""

    allowed: bool = Field(description="Whether the permission is granted.")
    roles: list[str] = Field(description="Roles the principal holds.")
    grant: str | None = Field(
        default=None, repr=False, description="Signed grant to pass on when allowed."
    )


class AssignRolesRequest(RpcRequest):
    """Replace a user's roles."""

    username: str = Field(pattern=USERNAME_PATTERN, description="User.")
    roles: list[str] = Field(description="Roles to hold from now on.")
    generation: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX,
        description=(
            "The account (its generation in identity) the roles are for: a deletion of that"
            " account or an older one removes them, never a newer account's (decision 0041)."
            " Required unless ``roles`` is empty: clearing by name only removes whatever the"
            " name holds."
        ),
    )


class RolesOfRequest(RpcRequest):
    """Ask which roles a user holds."""

    username: str = Field(description="User.")


class PermissionsOfRequest(RpcRequest):
    """Ask which permissions a user holds (through assigned and external roles)."""

    username: str = Field(description="User.")
    external_roles: list[str] = Field(
        default_factory=list, description="Roles from outside, e.g. PAM groups."
    )


class PermissionList(Message):
    """The permissions a user holds."""

    username: str = Field(description="User.")
    permissions: list[str] = Field(description="Permission names, sorted.")


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


class SecretRotation(Message):
    """The outcome of a rotation: metadata only."""

    path: str = Field(description="Path of the secret.")
    version: int = Field(description="Version number now current.")
    previous_version: int = Field(description="The version it replaced, readable until...")
    previous_readable_until: AwareDatetime = Field(description="...this moment, then destroyed.")


class RotateSecretRequest(RpcRequest):
    """Rotate a secret: its new value becomes a new version."""

    path: str = Field(pattern=SECRET_PATH_PATTERN, description="Path of the secret.")
    data: dict[str, str] = Field(repr=False, description="The new key/value pairs.")


class SecretPathRequest(RpcRequest):
    """A request about one secret path."""

    path: str = Field(pattern=SECRET_PATH_PATTERN, description="Path of the secret.")


class ListSecretsRequest(RpcRequest):
    """List secret metadata."""


PROVIDER_CREDENTIAL_PREFIX = "providers/"
"""Only secrets under this folder can be provider credentials (decision 0033)."""


class ResolveCredentialRequest(RpcRequest):
    """The exporter asks for a provider credential's values, on behalf of a sealed request."""

    path: str = Field(pattern=SECRET_PATH_PATTERN, description="Path of the credential.")


class CredentialValue(Message):
    """A provider credential: answered to the exporter only, never logged or published."""

    path: str = Field(description="Path of the credential.")
    data: dict[str, str] = Field(repr=False, description="Its key/value pairs (secret).")


# ---- exporter -------------------------------------------------------------------------------


class ProviderView(Message):
    """A provider connection: never its credential."""

    name: str = Field(description="Provider name.")
    type: str = Field(description="Provider type.")
    config: dict[str, str] = Field(description="Non-secret connection settings.")
    credential_ref: str | None = Field(description="Secret path of the credential.")
    created_at: AwareDatetime = Field(description="When it was registered.")


ProviderType = Literal["local", "libvirt", "vsphere"]
PROVIDER_TYPES: tuple[str, ...] = ("local", "libvirt", "vsphere")
ConfigValue = Annotated[str, StringConstraints(max_length=1024)]


class RegisterProviderRequest(RpcRequest):
    """Register a provider connection."""

    name: str = Field(pattern=NAME_PATTERN, description="Provider name.")
    type: ProviderType = Field(description="Provider type.")
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, max_length=32, description="Connection settings (no secrets)."
    )
    credential_ref: str | None = Field(
        default=None, pattern=SECRET_PATH_PATTERN, description="Secret path of the credential."
    )


class UpdateProviderRequest(RpcRequest):
    """Replace a provider's type, settings and credential reference (its name stays)."""

    name: str = Field(pattern=NAME_PATTERN, description="Provider name.")
    type: ProviderType = Field(description="Provider type.")
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, max_length=32, description="Connection settings (no secrets)."
    )
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

    name: str = Field(description="Disk name, safe as a file name (artifacts are named after it).")
    size_bytes: int = Field(description="Virtual size in bytes.")
    format: str = Field(description="Source format.")
    key: str | None = Field(default=None, description="Disk key in the VM (vda, scsi0:0).")
    controller: str | None = Field(default=None, description="virtio, scsi, ide, sata or nvme.")
    unit: int | None = Field(default=None, description="Position on its controller.")


class NicView(Message):
    """A VM network interface."""

    name: str = Field(description="Interface name in the provider.")
    network: str = Field(description="Network, bridge or port group it connects to.")
    mac: str | None = Field(default=None, description="MAC address.")
    model: str = Field(description="Device model (virtio, e1000, vmxnet3...).")


class VmView(Message):
    """A VM as the inventory shows it."""

    id: str = Field(description="Id unique within the platform: provider/<the provider's VM id>.")
    name: str = Field(description="VM name in the provider.")
    provider: str = Field(description="Provider name.")
    cpus: int = Field(description="Virtual CPUs.")
    memory_mib: int = Field(description="Memory in MiB.")
    disks: list[DiskView] = Field(
        description="Disks of the VM (a listing may leave them out; GET /vms/{id} has them)."
    )
    state: str = Field(default="unknown", description="running, stopped, paused, suspended...")
    path: str | None = Field(default=None, description="Where it lives in the provider.")
    firmware: Literal["bios", "efi"] | None = Field(
        default=None, description="Boot firmware, when described."
    )
    guest_os: str | None = Field(default=None, description="Guest OS id, when described.")
    nics: list[NicView] = Field(default_factory=list, description="Network interfaces.")
    detailed: bool = Field(
        default=True, description="Whether disks and NICs were described (false in some listings)."
    )


class ListVmsRequest(RpcRequest):
    """List VMs of one provider or of all, one page at a time."""

    provider: str | None = Field(default=None, description="Only this provider's VMs.")
    page_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="next_page_token of the previous page; none for the first page.",
    )
    limit: int = Field(default=100, ge=1, le=500, description="At most this many VMs.")


class VmPage(Message):
    """One page of the inventory."""

    items: list[VmView] = Field(description="VMs, by provider then name.")
    next_page_token: str | None = Field(description="Token of the next page; none on the last.")


class GetVmRequest(RpcRequest):
    """Describe one VM."""

    vm_id: str = Field(description="VM id, provider/vm.")


class CreateExportRequest(RpcRequest):
    """Queue an export of one VM."""

    provider: str = Field(description="Provider name.")
    vm: str = Field(description="VM name within the provider.")
    format: DiskFormat = Field(description="Target disk format.")
    compress: bool = Field(
        default=False,
        description=(
            "Compress the disks where the format allows it (qcow2, and the OVA's disks); "
            "streamOptimized VMDK is always compressed; refused for raw, vhdx and vpc."
        ),
    )
    idempotency_key: str | None = Field(
        default=None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Client-chosen key: the same key and request from the same requester "
        "return the same job; the same key with another request is a conflict.",
    )


class JobHistoryView(Message):
    """One transition of a job: the change-management record."""

    at: AwareDatetime = Field(description="When it happened, UTC.")
    action: str = Field(
        description="requested, started, cancel_requested, succeeded, failed or cancelled."
    )
    status: JobStatus = Field(description="The job's status after it.")
    actor: str | None = Field(description="Who did it (the requester, or who cancelled).")
    reason: str | None = Field(default=None, description="Stable reason code, if any.")
    detail: str | None = Field(
        default=None,
        description="Error text from qemu-img or the provider: bounded, secrets redacted.",
    )


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
    error_detail: str | None = Field(
        default=None, description="Error text when failed: bounded, secrets redacted."
    )
    attempts: int = Field(default=0, ge=0, description="How many times a worker started it.")
    cancel_requested_by: str | None = Field(
        default=None, description="Who asked to cancel it, if anyone."
    )
    started_at: AwareDatetime | None = Field(default=None, description="Last start, if any.")
    finished_at: AwareDatetime | None = Field(
        default=None, description="When it ended (succeeded, failed or cancelled)."
    )
    history: list[JobHistoryView] | None = Field(
        default=None,
        description="Every transition, oldest first (on a single job; None in listings).",
    )


class JobIdRequest(RpcRequest):
    """A request about one job."""

    job_id: str = Field(description="Job id.")


class ListJobsRequest(RpcRequest):
    """Page through jobs, newest first, optionally filtered."""

    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")
    after: str | None = Field(
        default=None,
        max_length=64,
        description="Cursor: the id of the last job of the previous page.",
    )
    status: JobStatus | None = Field(default=None, description="Only jobs in this status.")
    provider: str | None = Field(
        default=None, max_length=63, description="Only jobs of this provider."
    )
    requested_by: str | None = Field(
        default=None, max_length=128, description="Only jobs this principal asked for."
    )
    created_after: AwareDatetime | None = Field(
        default=None, description="Only jobs created at or after this time."
    )
    created_before: AwareDatetime | None = Field(
        default=None, description="Only jobs created before this time."
    )


# ---- audit ----------------------------------------------------------------------------------


class AuditEntryView(Message):
    """One entry of the audit chain."""

    sequence: int = Field(description="Position in the chain, from 1.")
    event_id: str = Field(description="Id of the event it records.")
    timestamp: AwareDatetime = Field(description="When it happened, by its producer's clock, UTC.")
    user: str | None = Field(description="User or API key id.")
    action: str = Field(description="What was done, e.g. vm.export.")
    resource: str | None = Field(description="What it was done to.")
    result: str = Field(description="success or failure: <reason>.")
    source_ip: str | None = Field(description="Client address.")
    request_id: str | None = Field(description="Request ID of the API call.")
    producer: str | None = Field(
        default=None,
        description="Service that published the event, known from its broker login "
        "(None on entries older than attribution).",
    )
    received_at: AwareDatetime | None = Field(
        default=None,
        description="When audit received the event, UTC (None on entries older than it).",
    )
    prev_hash: str = Field(description="Hash of the previous entry.")
    hash: str = Field(description="SHA-256 of this entry's canonical form.")


class CheckpointView(Message):
    """A signed checkpoint of the audit log's Merkle tree (decision 0047).

    The signature is Ed25519 over the checkpoint's body: the lines
    ``hypersdk-audit-checkpoint/v1``, ``origin <origin>``, ``size <size>``, ``root <hex>``,
    ``head <hex>``, ``time <YYYY-MM-DDTHH:MM:SS.ffffffZ>``, each ending in a newline.
    """

    origin: str = Field(description="Which log this is (the deployment's audit origin).")
    size: int = Field(description="How many entries the tree holds (sequences 1 to size).")
    root: str = Field(description="RFC 9162 Merkle tree root at that size, hex.")
    head: str = Field(description="Hash of the entry at sequence size (the chain's head).")
    time: str = Field(description="When it was signed, UTC, in the body's form.")
    key_id: str = Field(description="Which key signed: ed25519:<16 hex of SHA-256 of it>.")
    signature: str = Field(description="Ed25519 signature of the body, base64.")


class CheckpointRequest(RpcRequest):
    """Sign a checkpoint of the log as it is now (the latest one if nothing was added)."""


class ListCheckpointsRequest(RpcRequest):
    """Checkpoints in increasing size."""

    after_size: int = Field(default=0, ge=0, description="Checkpoints of larger sizes.")
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")
    latest: bool = Field(default=False, description="Only the newest checkpoint.")


class InclusionProofRequest(RpcRequest):
    """Prove that an entry is in the tree of a given size."""

    sequence: int = Field(ge=1, description="The entry.")
    tree_size: int | None = Field(
        default=None, ge=1, description="The tree's size (by default the latest checkpoint's)."
    )


class InclusionProofView(Message):
    """RFC 9162 inclusion proof: the audit path of leaf ``sequence - 1``."""

    entry: AuditEntryView = Field(description="The entry (its canonical JSON is the leaf).")
    leaf_index: int = Field(description="sequence - 1.")
    tree_size: int = Field(description="Size of the tree the proof is for.")
    hashes: list[str] = Field(description="The audit path, hex, bottom-up.")


class ConsistencyProofRequest(RpcRequest):
    """Prove that the tree of ``first`` entries is a prefix of the tree of ``second``."""

    first: int = Field(ge=1, description="The older size.")
    second: int | None = Field(
        default=None, ge=1, description="The newer size (by default the latest checkpoint's)."
    )


class ConsistencyProofView(Message):
    """RFC 9162 consistency proof between two sizes."""

    first: int = Field(description="The older size.")
    second: int = Field(description="The newer size.")
    hashes: list[str] = Field(description="The proof, hex.")


class PublicKeysRequest(RpcRequest):
    """The keys checkpoints are signed with."""


class PublicKeysView(Message):
    """The log's origin and its checkpoint keys, by key id (PEM)."""

    origin: str = Field(description="Which log this is.")
    keys: dict[str, str] = Field(description="key id -> Ed25519 public key, PEM.")
    genesis: GenesisView | None = Field(
        default=None, description="Where the log starts after a retention cut (None: at 0)."
    )


class GenesisView(Message):
    """A retention genesis (decision 0048): the log holds the entries after ``size``."""

    size: int = Field(description="Entries 1 to size were cut.")
    head: str = Field(description="Hash of entry size, which the next entry links to.")
    frontier: list[str] = Field(
        description="The tree's compact range at size: its perfect subtrees' roots, largest "
        "first, hex."
    )
    checkpoint: CheckpointView = Field(description="The signed checkpoint at size.")


class VerifyRequest(RpcRequest):
    """Verify what was added since the newest checkpoint a verification found valid."""


class VerificationProblemView(Message):
    """One problem a verification found."""

    code: str = Field(description="Stable code, e.g. entry_edited, entries_missing.")
    sequence: int | None = Field(description="Where, if it has a place.")
    message: str = Field(description="What it means.")


class VerificationView(Message):
    """A verification of the log by the offline verifier (decision 0048)."""

    id: str = Field(description="Id of the run.")
    kind: Literal["incremental", "full"] = Field(description="From a checkpoint, or all.")
    status: Literal["running", "done", "abandoned"] = Field(
        description="abandoned: its replica stopped before it ended."
    )
    requested_by: str | None = Field(description="Who asked for it.")
    started_at: AwareDatetime = Field(description="When it started, UTC.")
    updated_at: AwareDatetime = Field(description="Last progress, UTC.")
    finished_at: AwareDatetime | None = Field(description="When it ended, UTC.")
    from_size: int = Field(description="It starts after this entry (a signed checkpoint).")
    to_size: int = Field(description="The log's size when it started: walked up to it.")
    checked: int = Field(description="Entries walked.")
    valid: bool | None = Field(description="The outcome (None while running).")
    latest_checkpoint: int | None = Field(
        description="Newest checkpoint whose signature, root and head were found right."
    )
    problems: list[VerificationProblemView] = Field(description="The first 100 problems.")
    problems_not_listed: int = Field(description="Problems beyond those listed.")


class StartVerificationRequest(RpcRequest):
    """Start a full verification in the background."""


class VerificationIdRequest(RpcRequest):
    """One verification."""

    id: str = Field(min_length=1, max_length=64, description="Its id.")


class ListVerificationsRequest(RpcRequest):
    """The newest verifications first."""

    limit: int = Field(default=20, ge=1, le=200, description="At most this many.")


class HoldView(Message):
    """A legal hold: while one stands, retention cuts nothing."""

    id: str = Field(description="Id of the hold.")
    reason: str = Field(description="Why it was placed.")
    placed_by: str = Field(description="Who placed it.")
    placed_at: AwareDatetime = Field(description="When, UTC.")
    lifted_by: str | None = Field(description="Who lifted it.")
    lifted_at: AwareDatetime | None = Field(description="When, UTC (None: it stands).")


class ListHoldsRequest(RpcRequest):
    """Every legal hold, lifted ones too."""


class PlaceHoldRequest(RpcRequest):
    """Place a legal hold."""

    reason: str = Field(min_length=1, max_length=500, description="Why (a case, a request).")


class HoldIdRequest(RpcRequest):
    """One legal hold."""

    id: str = Field(min_length=1, max_length=64, description="Its id.")


class VerifyResult(Message):
    """Outcome of verifying the chain."""

    valid: bool = Field(description="Whether every entry checks out.")
    entries: int = Field(description="How many entries were checked.")
    first_bad_sequence: int | None = Field(description="First entry that does not check out.")
    reason: str | None = Field(description="What is wrong with it.")
    verification: VerificationView | None = Field(
        default=None, description="The run in full: where it started, every problem."
    )


AUDIT_ACTION_FILTER_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}\*?$"
"""An audit action (``vm.export``), or the start of some followed by ``*`` (``vm.export*``)."""


class AuditTextFilters(BaseModel):
    """The exact-text filters of an audit query, each bounded; every one given must hold.

    Shared by the request (``ListAuditEventsRequest``) and the gateway's query parameters, so
    the API's document states the same bounds the audit service enforces.
    """

    user: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Only entries this user (or API key id) caused.",
    )
    subject: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Only entries about this person (a data subject's access request): those "
        "they caused and those about their account (resource user/<subject>).",
    )
    action: str | None = Field(
        default=None,
        pattern=AUDIT_ACTION_FILTER_PATTERN,
        description="Only this action (vm.export); with a trailing *, every action that starts "
        "with what precedes it (vm.export* is vm.export, vm.export.start, ...).",
    )
    resource: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Only entries about this resource, exactly (user/alice, job/<id>).",
    )
    result: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Only this result, exactly (success, failure: http_403); failure: every "
        "failure, whatever its reason.",
    )
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Only entries of this API call's request ID.",
    )
    source_ip: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Only entries of calls from this client address, exactly.",
    )


class ListAuditEventsRequest(RpcRequest, AuditTextFilters):
    """Page through the chain in order, optionally filtered: an entry must pass every filter.

    The cursor is the sequence of the last entry of the previous page (``after_sequence``);
    a page shorter than ``limit`` is the last one.
    """

    after_sequence: int = Field(default=0, ge=0, description="Entries after this one.")
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")
    since: AwareDatetime | None = Field(
        default=None, description="Only entries whose timestamp is at or after this time."
    )
    until: AwareDatetime | None = Field(
        default=None, description="Only entries whose timestamp is before this time."
    )


class QuarantinedEventView(Message):
    """An event audit refused to chain as genuine; everything but ``number`` is unverified."""

    number: int = Field(description="Position in the quarantine, from 1.")
    id: str = Field(description="Id of the audit.event.quarantined entry that records it.")
    received_at: AwareDatetime = Field(description="When audit received it, UTC.")
    event_id: str = Field(description="Event id the envelope claimed.")
    claimed_type: str = Field(description="Event type the envelope claimed.")
    claimed_source: str = Field(description="Producer (CloudEvents source) the envelope claimed.")
    claimed_actor: str | None = Field(description="Actor the envelope claimed.")
    login: str | None = Field(description="Broker-validated login that published it, if any.")
    producer: str | None = Field(description="Service that login belongs to, if any.")
    reason: str = Field(description="Stable reason code, e.g. wrong_producer.")
    envelope: dict[str, Any] = Field(
        description="The envelope as received, with secret-looking fields redacted."
    )


class ListQuarantineRequest(RpcRequest):
    """Page through the quarantine in the order events arrived."""

    after_number: int = Field(
        default=0, ge=0, le=2**63 - 1, description="Quarantined events after this one."
    )
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")


class RoleList(Message):
    """The roles a user holds."""

    username: str = Field(description="User.")
    roles: list[str] = Field(description="Roles held, sorted.")


# ---- webhooks ---------------------------------------------------------------------------------

WEBHOOK_ID_PATTERN = r"^ep_[0-9a-f]{24}$"
WEBHOOK_MESSAGE_ID_PATTERN = r"^wm_[0-9a-f]{24}$"
EventTypePattern = Annotated[str, StringConstraints(min_length=1, max_length=200)]
"""A routing-key pattern; the webhooks service checks its form (and says what is wrong)."""


class WebhookView(Message):
    """A webhook endpoint as the API shows it: never its signing secret."""

    id: str = Field(description="Endpoint id (ep_...).")
    url: str = Field(description="Where messages are POSTed (normalized).")
    event_types: list[str] = Field(
        description="Routing-key patterns it receives: `*` one word, `#` any number."
    )
    description: str = Field(description="What it is for.")
    status: Literal["active", "paused", "disabled"] = Field(description="Whether it is sent to.")
    timeout_seconds: float = Field(description="Per-attempt timeout.")
    max_in_flight: int = Field(description="Attempts in flight at once, at most.")
    created_at: AwareDatetime = Field(description="When it was registered, UTC.")
    updated_at: AwareDatetime = Field(description="When it last changed, UTC.")
    failing_since: AwareDatetime | None = Field(
        description="First failure since the last success (None: not failing)."
    )
    consecutive_failures: int = Field(description="Attempts failed in a row.")
    disabled_reason: str = Field(description="Why it was disabled, when it was.")
    previous_secret_valid_until: AwareDatetime | None = Field(
        description="During a rotation's overlap: until when the old secret signs too."
    )


class IssuedWebhook(Message):
    """An endpoint and its signing secret: the only time the secret is shown."""

    secret: str = Field(
        repr=False,
        description="Signing secret (whsec_ + base64); store it now, it is never shown again.",
    )
    webhook: WebhookView = Field(description="The endpoint.")


class CreateWebhookRequest(RpcRequest):
    """Register a webhook endpoint (checked: only http(s), no blocked address)."""

    url: str = Field(min_length=1, max_length=2048, description="http or https URL.")
    event_types: list[EventTypePattern] = Field(
        min_length=1, max_length=32, description="Routing-key patterns to receive."
    )
    description: str = Field(default="", max_length=500, description="What it is for.")
    timeout_seconds: float = Field(default=10.0, ge=1, le=30, description="Per-attempt timeout.")
    max_in_flight: int = Field(default=4, ge=1, le=16, description="Attempts in flight at once.")


class WebhookIdRequest(RpcRequest):
    """A request about one endpoint."""

    endpoint_id: str = Field(pattern=WEBHOOK_ID_PATTERN, description="Endpoint id.")


class ListWebhooksRequest(RpcRequest):
    """Every webhook endpoint, oldest first."""


class UpdateWebhookRequest(WebhookIdRequest):
    """Change what is given; the rest stays."""

    url: str | None = Field(default=None, min_length=1, max_length=2048, description="New URL.")
    event_types: list[EventTypePattern] | None = Field(
        default=None, min_length=1, max_length=32, description="New patterns."
    )
    description: str | None = Field(default=None, max_length=500, description="New description.")
    timeout_seconds: float | None = Field(default=None, ge=1, le=30, description="New timeout.")
    max_in_flight: int | None = Field(default=None, ge=1, le=16, description="New limit.")


class WebhookAttemptView(Message):
    """How one attempt ended."""

    outcome: str = Field(description="delivered, http_error, timeout, connect_failed, ...")
    status: int | None = Field(description="HTTP status of the answer, if one came.")
    latency_ms: float = Field(description="From the lookup to the answer, milliseconds.")
    address: str | None = Field(description="The checked address connected to.")
    detail: str = Field(description="A short explanation (never a secret or the answer body).")


class WebhookMessageView(Message):
    """One event to one endpoint: where its delivery stands."""

    id: str = Field(description="Message id (wm_...).")
    endpoint_id: str = Field(description="Its endpoint.")
    event_id: str = Field(description="The event it carries.")
    event_type: str = Field(description="That event's routing key.")
    webhook_id: str = Field(description="The webhook-id header, the same on every attempt.")
    state: Literal["pending", "delivered", "dead"] = Field(description="Where it stands.")
    attempts: int = Field(description="Attempts made.")
    created_at: AwareDatetime = Field(description="When the event was taken, UTC.")
    next_attempt_at: AwareDatetime | None = Field(description="When it is tried next.")
    last_attempt: WebhookAttemptView | None = Field(description="How the last attempt ended.")


class ListDeadLettersRequest(WebhookIdRequest):
    """An endpoint's dead letters, newest first."""

    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")


class ReplayWebhookMessageRequest(WebhookIdRequest):
    """Put a dead letter back, due now, its retries started over (same webhook-id)."""

    message_id: str = Field(pattern=WEBHOOK_MESSAGE_ID_PATTERN, description="Message id.")


# ---- AMQP subscriptions -----------------------------------------------------------------------

SUBSCRIPTION_ID_PATTERN = r"^sb_[0-9a-f]{24}$"


class SubscriptionView(Message):
    """An AMQP subscription as the API shows it: never its password."""

    id: str = Field(description="Subscription id (sb_...); also its RabbitMQ user name.")
    description: str = Field(description="What it is for.")
    created_at: AwareDatetime = Field(description="When it was created, UTC.")
    exchange: str = Field(
        description="Its tap exchange (`sub.<id>`): bind queues to it with routing-key "
        "patterns; it carries every public event."
    )
    queue_prefix: str = Field(
        description="Its queues must be named with this prefix (`sub.<id>.`)."
    )
    queues: list[str] = Field(description="Queue names it has declared so far, sorted.")
    max_queues: int = Field(description="How many queue names it may declare at most.")


class IssuedSubscription(Message):
    """A subscription and its broker password: the only time the password is shown."""

    username: str = Field(description="RabbitMQ user name (the subscription id).")
    password: str = Field(
        repr=False,
        description="RabbitMQ password; store it now, it is never shown again.",
    )
    vhost: str = Field(description="The RabbitMQ virtual host to connect to.")
    subscription: SubscriptionView = Field(description="The subscription.")


class CreateSubscriptionRequest(RpcRequest):
    """Create an AMQP subscription: a broker user of its own, reading only its own queues."""

    description: str = Field(default="", max_length=500, description="What it is for.")


class SubscriptionIdRequest(RpcRequest):
    """A request about one subscription."""

    subscription_id: str = Field(pattern=SUBSCRIPTION_ID_PATTERN, description="Subscription id.")


class ListSubscriptionsRequest(RpcRequest):
    """Every AMQP subscription, oldest first."""
