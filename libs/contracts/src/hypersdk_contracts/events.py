"""Event payloads: facts, in past tense. None of them carries a password, token or key.

Each payload names its routing key and the audit action it stands for, so the audit service
can turn any event into an audit entry without knowing the producer.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from hypersdk_contracts.base import INT64_MAX, Message
from hypersdk_contracts.names import RoutingKey

HTTP_ERROR_FLOOR = 400


class EventData(Message):
    """Payload of an event."""

    routing_key: ClassVar[RoutingKey]
    audit_action: ClassVar[str]

    def audit_result(self) -> str:
        """``success`` or ``failure: <reason>`` as the audit log records it."""
        return "success"


class Artifact(Message):
    """A file an export produced."""

    name: str = Field(description="File name inside the job's export directory.")
    size_bytes: int = Field(ge=0, description="Size of the file in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the file, hex.")


class LoginSucceeded(EventData):
    """A user proved their identity."""

    routing_key = RoutingKey.LOGIN_SUCCEEDED
    audit_action = "auth.login"
    username: str = Field(description="Who logged in.")
    method: Literal["local", "pam"] = Field(description="How the password was checked.")


class LoginFailed(EventData):
    """A login attempt was refused."""

    routing_key = RoutingKey.LOGIN_FAILED
    audit_action = "auth.login"
    username: str = Field(description="The user name that was tried.")
    reason: Literal[
        "invalid_credentials", "account_disabled", "throttled", "locked", "not_provisioned"
    ] = Field(
        description="Why it was refused. The client sees invalid_credentials for all but "
        "throttled and locked (429, which never depends on whether the user exists)."
    )

    def audit_result(self) -> str:
        """Failure with its reason."""
        return f"failure: {self.reason}"


class SessionCreated(EventData):
    """A session began; the token itself is never in the event."""

    routing_key = RoutingKey.SESSION_CREATED
    audit_action = "session.create"
    session_id: str = Field(description="Public id of the session (not the token).")
    username: str = Field(description="Owner of the session.")
    expires_at: AwareDatetime = Field(description="Absolute end of the session, UTC.")


class SessionRevoked(EventData):
    """A session ended before its time."""

    routing_key = RoutingKey.SESSION_REVOKED
    audit_action = "session.revoke"
    session_id: str = Field(description="Public id of the session.")
    username: str = Field(description="Owner of the session.")
    reason: Literal[
        "logout", "revoked_by_owner", "user_disabled", "user_deleted", "roles_changed"
    ] = Field(description="Why it ended.")


class UserCreated(EventData):
    """A user account was created (local, or a PAM user by an admin or on first login)."""

    routing_key = RoutingKey.USER_CREATED
    audit_action = "user.create"
    username: str = Field(description="The new user.")
    source: Literal["local", "pam"] = Field(
        default="local", description="Where the password is checked."
    )
    provisioned: bool = Field(
        default=False, description="Created on a first PAM login through the group map."
    )


class UserUpdated(EventData):
    """A user account changed (enabled again, or its roles changed and its sessions ended)."""

    routing_key = RoutingKey.USER_UPDATED
    audit_action = "user.update"
    username: str = Field(description="The user.")
    changed: list[Literal["enabled", "roles"]] = Field(description="What changed.")
    sessions_revoked: int = Field(default=0, ge=0, description="Sessions ended by the change.")


class UserDisabled(EventData):
    """A user account was disabled; its sessions ended and its API keys were revoked."""

    routing_key = RoutingKey.USER_DISABLED
    audit_action = "user.disable"
    username: str = Field(description="The user.")
    sessions_revoked: int = Field(ge=0, description="Sessions ended.")
    api_keys_revoked: int = Field(
        default=0, ge=0, description="API keys revoked (enabling the user again restores none)."
    )


class UserDeleted(EventData):
    """A user account was deleted with its sessions and API keys."""

    routing_key = RoutingKey.USER_DELETED
    audit_action = "user.delete"
    username: str = Field(description="The user.")
    generation: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX,
        description=(
            "Which account of that name was deleted (its generation in identity); null only"
            " in events published before accounts had generations (decision 0041)."
        ),
    )
    sessions_revoked: int = Field(ge=0, description="Sessions ended.")
    api_keys_revoked: int = Field(ge=0, description="API keys removed.")


class SessionRefreshed(EventData):
    """A session got a new token; the old one stopped working. The tokens are never in it."""

    routing_key = RoutingKey.SESSION_REFRESHED
    audit_action = "session.refresh"
    session_id: str = Field(description="Public id of the session (unchanged).")
    username: str = Field(description="Owner of the session.")
    expires_at: AwareDatetime = Field(description="Absolute end of the session (unchanged).")


class AccountLocked(EventData):
    """Logins for a user name or from a client address are refused for a while."""

    routing_key = RoutingKey.ACCOUNT_LOCKED
    audit_action = "auth.lockout"
    username: str | None = Field(default=None, description="The locked user name, if any.")
    address: str | None = Field(default=None, description="The locked client address, if any.")
    failures: int = Field(ge=1, description="Failed logins that caused the lockout.")
    locked_until: AwareDatetime = Field(description="When logins are accepted again, UTC.")


class AccountUnlocked(EventData):
    """A lockout ended: lifted by an admin, or expired."""

    routing_key = RoutingKey.ACCOUNT_UNLOCKED
    audit_action = "auth.unlock"
    username: str | None = Field(default=None, description="The user name, if any.")
    address: str | None = Field(default=None, description="The client address, if any.")
    reason: Literal["admin", "expired"] = Field(description="Why it ended.")


class ApiKeyCreated(EventData):
    """An API key was issued (never the key, nor any part of it)."""

    routing_key = RoutingKey.APIKEY_CREATED
    audit_action = "apikey.create"
    key_id: str = Field(description="Public id of the key.")
    owner: str = Field(description="User the key acts as.")
    name: str = Field(description="Label of the key.")
    scopes: list[str] = Field(description="Permissions the key is limited to.")
    expires_at: AwareDatetime | None = Field(description="When the key stops working, if ever.")


class ApiKeyRotated(EventData):
    """An API key was replaced by a new one; the old one dies now or after a grace period."""

    routing_key = RoutingKey.APIKEY_ROTATED
    audit_action = "apikey.rotate"
    key_id: str = Field(description="The replaced key.")
    new_key_id: str = Field(description="The key that replaces it.")
    owner: str = Field(description="User the keys act as.")
    old_key_valid_until: AwareDatetime = Field(description="When the replaced key stops working.")


class ApiKeyRevoked(EventData):
    """An API key stopped working."""

    routing_key = RoutingKey.APIKEY_REVOKED
    audit_action = "apikey.revoke"
    key_id: str = Field(description="Public id of the key.")
    owner: str = Field(description="User the key acted as.")
    reason: Literal["revoked", "owner_deleted", "owner_disabled"] = Field(
        description="Why it stopped working."
    )


class RoleAssigned(EventData):
    """A user's set of roles was replaced."""

    routing_key = RoutingKey.ROLE_ASSIGNED
    audit_action = "role.assign"
    username: str = Field(description="Whose roles changed.")
    roles: list[str] = Field(description="The roles the user now holds.")
    generation: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX,
        description=(
            "The account (generation) they were assigned to; null: by name only (the"
            " bootstrap admin, or a clear by name)."
        ),
    )


class RoleRemoved(EventData):
    """A user lost roles (published with the role.assigned that replaced them)."""

    routing_key = RoutingKey.ROLE_REMOVED
    audit_action = "role.remove"
    username: str = Field(description="Whose roles changed.")
    roles: list[str] = Field(description="The roles the user no longer holds.")


class AuthorizationDenied(EventData):
    """The policy refused a permission to a principal."""

    routing_key = RoutingKey.AUTHORIZATION_DENIED
    audit_action = "authz.decide"
    principal: str = Field(description="Who asked.")
    permission: str = Field(description="The permission that was missing.")
    resource: str = Field(description="What the call was about, e.g. 'POST /api/v1/exports'.")

    def audit_result(self) -> str:
        """Always a failure."""
        return "failure: permission_denied"


class SecretWritten(EventData):
    """A secret was stored; only its path and version, never its value."""

    routing_key = RoutingKey.SECRET_WRITTEN
    audit_action = "secret.write"
    path: str = Field(description="Path of the secret.")
    version: int = Field(description="Version number now current.")


class SecretDeleted(EventData):
    """A secret and all its versions were removed."""

    routing_key = RoutingKey.SECRET_DELETED
    audit_action = "secret.delete"
    path: str = Field(description="Path of the secret.")


class SecretRotated(EventData):
    """A secret got a new version; the previous one stays readable until a deadline."""

    routing_key = RoutingKey.SECRET_ROTATED
    audit_action = "secret.rotate"
    path: str = Field(description="Path of the secret.")
    version: int = Field(description="Version number now current.")
    previous_version: int = Field(description="The version it replaced.")
    previous_readable_until: AwareDatetime = Field(
        description="When the previous version is destroyed (the rotation's grace period)."
    )


class SecretRead(EventData):
    """A service read a secret's value (the exporter, a provider credential); never the value."""

    routing_key = RoutingKey.SECRET_READ
    audit_action = "secret.read"
    path: str = Field(description="Path of the secret.")
    version: int = Field(description="The version that was read.")
    reader: str = Field(description="The broker login of the service that read it.")


class SecretVersionDestroyed(EventData):
    """A rotated-from version reached the end of its grace period and was destroyed."""

    routing_key = RoutingKey.SECRET_VERSION_DESTROYED
    audit_action = "secret.destroy_version"
    path: str = Field(description="Path of the secret.")
    version: int = Field(description="The version destroyed.")


class ProviderRegistered(EventData):
    """A provider connection was registered."""

    routing_key = RoutingKey.PROVIDER_REGISTERED
    audit_action = "provider.register"
    name: str = Field(description="Provider name.")
    type: str = Field(description="Provider type.")
    credential_ref: str | None = Field(description="Secret path of its credential, if any.")


class ProviderUpdated(EventData):
    """A provider connection's type, settings or credential reference was replaced."""

    routing_key = RoutingKey.PROVIDER_UPDATED
    audit_action = "provider.update"
    name: str = Field(description="Provider name.")
    type: str = Field(description="Provider type after the change.")
    credential_ref: str | None = Field(
        description="Secret path of its credential after the change, if any."
    )


class ProviderRemoved(EventData):
    """A provider connection was removed."""

    routing_key = RoutingKey.PROVIDER_REMOVED
    audit_action = "provider.remove"
    name: str = Field(description="Provider name.")


class JobRequested(EventData):
    """An export job was accepted and queued."""

    routing_key = RoutingKey.JOB_REQUESTED
    audit_action = "vm.export"
    job_id: str = Field(description="The job.")
    provider: str = Field(description="Provider of the VM.")
    vm: str = Field(description="VM id.")
    format: str = Field(description="Target disk format.")


class JobStarted(EventData):
    """A worker began an export job."""

    routing_key = RoutingKey.JOB_STARTED
    audit_action = "vm.export.start"
    job_id: str = Field(description="The job.")


class JobProgressed(EventData):
    """An export job moved forward."""

    routing_key = RoutingKey.JOB_PROGRESSED
    audit_action = "vm.export.progress"
    job_id: str = Field(description="The job.")
    progress: int = Field(ge=0, le=100, description="Percent done.")
    bytes_done: int | None = Field(
        default=None, ge=0, description="Bytes of the source disks converted so far."
    )
    bytes_total: int | None = Field(
        default=None, ge=0, description="Bytes of the source disks in all (virtual sizes)."
    )
    rate_bytes_per_second: int | None = Field(
        default=None, ge=0, description="Conversion rate since the job started."
    )
    eta_seconds: int | None = Field(
        default=None, ge=0, description="Estimated seconds until the conversion ends."
    )


class JobCompleted(EventData):
    """An export job finished and its artifacts are on disk."""

    routing_key = RoutingKey.JOB_COMPLETED
    audit_action = "vm.export.complete"
    job_id: str = Field(description="The job.")
    artifacts: list[Artifact] = Field(description="Files produced, with sizes and hashes.")


class JobFailed(EventData):
    """An export job failed."""

    routing_key = RoutingKey.JOB_FAILED
    audit_action = "vm.export.complete"
    job_id: str = Field(description="The job.")
    reason: str = Field(description="Stable reason code.")

    def audit_result(self) -> str:
        """Failure with its reason."""
        return f"failure: {self.reason}"


class JobCancelRequested(EventData):
    """Someone asked to cancel a running export job; its worker stops it within a second."""

    routing_key = RoutingKey.JOB_CANCEL_REQUESTED
    audit_action = "vm.export.cancel"
    job_id: str = Field(description="The job.")


class JobCancelled(EventData):
    """An export job ended cancelled: its conversion stopped, its partial output removed."""

    routing_key = RoutingKey.JOB_CANCELLED
    audit_action = "vm.export.complete"
    job_id: str = Field(description="The job.")
    cancelled_by: str | None = Field(description="Who cancelled it (user or API key id).")

    def audit_result(self) -> str:
        """Failure: cancelled."""
        return "failure: cancelled"


class RequestCompleted(EventData):
    """The gateway answered an API call."""

    routing_key = RoutingKey.REQUEST_COMPLETED
    audit_action = "api.call"
    method: str = Field(description="HTTP method.")
    route: str = Field(description="Route template, e.g. /api/v1/jobs/{job_id}.")
    status: int = Field(description="HTTP status returned.")
    duration_ms: float = Field(description="Time spent answering.")

    def audit_result(self) -> str:
        """Success below 400, else the status."""
        return "success" if self.status < HTTP_ERROR_FLOOR else f"failure: http_{self.status}"


class RefusalsSummarized(EventData):
    """The gateway refused calls from one client address in bulk, throttling it.

    One event per client address, reason and window (the address is the event's
    ``source_ip``), instead of one ``gateway.request.completed`` per refused call: a flood of
    anonymous calls must not become a flood of audit entries.
    """

    routing_key = RoutingKey.REFUSALS_SUMMARIZED
    audit_action = "api.throttle"
    reason: Literal["authentication_failures", "rate_limited"] = Field(
        description="authentication_failures: too many failed authentications from the "
        "address (429 before identity is asked); rate_limited: anonymous calls over their "
        "rate limit (429)."
    )
    refused: int = Field(ge=1, le=2**63 - 1, description="Calls refused in the window.")
    window_started_at: AwareDatetime = Field(description="First refusal of the window, UTC.")
    window_ended_at: AwareDatetime = Field(description="End of the window, UTC.")

    def audit_result(self) -> str:
        """Failure with its reason and how many calls it stands for."""
        return f"failure: {self.reason} ({self.refused} calls)"


class RequestRejected(EventData):
    """A service refused a request or command that lacked a valid principal or grant."""

    audit_action = "bus.request"
    operation: str = Field(description="Queue or command the message asked for.")
    reason: str = Field(description="Stable reason code, e.g. missing_assertion, expired.")
    claimed_actor: str | None = Field(description="Actor the message claimed (unverified).")

    def audit_result(self) -> str:
        """Always a failure."""
        return f"failure: {self.reason}"


class IdentityRequestRejected(RequestRejected):
    """Identity refused a request."""

    routing_key = RoutingKey.IDENTITY_REQUEST_REJECTED


class PolicyRequestRejected(RequestRejected):
    """Policy refused a request."""

    routing_key = RoutingKey.POLICY_REQUEST_REJECTED


class SecretsRequestRejected(RequestRejected):
    """Secrets refused a request."""

    routing_key = RoutingKey.SECRETS_REQUEST_REJECTED


class ExporterRequestRejected(RequestRejected):
    """The exporter refused a request or an export command."""

    routing_key = RoutingKey.EXPORTER_REQUEST_REJECTED


class AuditRequestRejected(RequestRejected):
    """Audit refused a request."""

    routing_key = RoutingKey.AUDIT_REQUEST_REJECTED


class EventQuarantined(EventData):
    """Audit refused to chain an event as genuine and put it in its quarantine."""

    routing_key = RoutingKey.EVENT_QUARANTINED
    audit_action = "audit.quarantine"
    quarantined_event_id: str = Field(description="Id the refused envelope claimed.")
    claimed_type: str = Field(description="Type the refused envelope claimed (unverified).")
    claimed_source: str = Field(description="Source the refused envelope claimed (unverified).")
    claimed_actor: str | None = Field(
        description="Actor the refused envelope claimed (unverified)."
    )
    login: str | None = Field(description="Broker-validated login that published it, if any.")
    producer: str | None = Field(description="Service that login belongs to, if any.")
    reason: str = Field(description="Stable reason code, e.g. wrong_producer, unsealed_actor.")

    def audit_result(self) -> str:
        """Always a failure."""
        return f"failure: {self.reason}"


class CheckpointSigned(EventData):
    """Audit signed a checkpoint of its Merkle tree: witnesses keep it (decision 0047)."""

    routing_key = RoutingKey.CHECKPOINT_SIGNED
    audit_action = "audit.checkpoint"
    origin: str = Field(description="Which log.")
    size: int = Field(ge=0, description="Entries the tree holds.")
    root: str = Field(pattern=r"^[0-9a-f]{64}$", description="Merkle root, hex.")
    head: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hash of the entry at size.")
    time: str = Field(description="When it was signed (the signed body's form).")
    key_id: str = Field(description="Which key signed.")
    signature: str = Field(description="Ed25519 signature of the body, base64.")


class RetentionCut(EventData):
    """The retention job cut the oldest entries; the log now starts at a signed genesis (0048).

    Chained by the retention job itself, in the transaction of the cut, before the entries go.
    """

    routing_key = RoutingKey.RETENTION_APPLIED
    audit_action = "audit.retention.cut"
    genesis_size: int = Field(ge=1, description="Entries 1 to this one were cut.")
    genesis_head: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hash of that entry.")
    root: str = Field(pattern=r"^[0-9a-f]{64}$", description="Merkle root at that size, hex.")
    reason: Literal["age", "size"] = Field(description="Which limit the entries passed.")
    cutoff: AwareDatetime | None = Field(
        default=None, description="For an age cut: entries recorded before this time."
    )


class HoldPlaced(EventData):
    """A legal hold was placed: retention cuts nothing until every hold is lifted."""

    routing_key = RoutingKey.HOLD_PLACED
    audit_action = "audit.hold.place"
    hold_id: str = Field(description="Id of the hold.")
    reason: str = Field(description="Why, as the person placing it wrote it.")


class HoldLifted(EventData):
    """A legal hold was lifted."""

    routing_key = RoutingKey.HOLD_LIFTED
    audit_action = "audit.hold.lift"
    hold_id: str = Field(description="Id of the hold.")


class WebhooksRequestRejected(RequestRejected):
    """Webhooks refused a request."""

    routing_key = RoutingKey.WEBHOOKS_REQUEST_REJECTED


WebhookOutcome = Literal[
    "delivered",
    "http_error",
    "timeout",
    "connect_failed",
    "tls_failed",
    "blocked_address",
    "unresolvable",
    "invalid_response",
]
"""How one webhook attempt can end (docs/webhooks.md)."""


class WebhookEndpointEvent(EventData):
    """Something happened to a webhook endpoint (its id is the event's subject too)."""

    endpoint_id: str = Field(description="Id of the endpoint.")


class WebhookCreated(WebhookEndpointEvent):
    """A webhook endpoint was registered; its signing secret is never in an event."""

    routing_key = RoutingKey.WEBHOOK_CREATED
    audit_action = "webhook.create"
    target: str = Field(
        description="Scheme, host and port of the URL only: a path or query may hold a token."
    )
    event_types: list[str] = Field(description="The event type filters (topic patterns).")


class WebhookUpdated(WebhookEndpointEvent):
    """A webhook endpoint's settings changed."""

    routing_key = RoutingKey.WEBHOOK_UPDATED
    audit_action = "webhook.update"
    target: str = Field(description="Scheme, host and port of the URL now.")
    event_types: list[str] = Field(description="The event type filters now.")
    changed: list[str] = Field(description="Which settings the request changed.")


class WebhookPaused(WebhookEndpointEvent):
    """A webhook endpoint was paused: its messages wait."""

    routing_key = RoutingKey.WEBHOOK_PAUSED
    audit_action = "webhook.pause"


class WebhookResumed(WebhookEndpointEvent):
    """A paused or disabled webhook endpoint is sent to again."""

    routing_key = RoutingKey.WEBHOOK_RESUMED
    audit_action = "webhook.resume"


class WebhookDeleted(WebhookEndpointEvent):
    """A webhook endpoint was removed, with its messages."""

    routing_key = RoutingKey.WEBHOOK_DELETED
    audit_action = "webhook.delete"


class WebhookSecretRotated(WebhookEndpointEvent):
    """A webhook endpoint got a new signing secret; the old one signs too until the time given."""

    routing_key = RoutingKey.WEBHOOK_SECRET_ROTATED
    audit_action = "webhook.rotate_secret"
    previous_valid_until: AwareDatetime = Field(
        description="Until when attempts carry a signature with the old secret as well, UTC."
    )


class WebhookDisabled(WebhookEndpointEvent):
    """A webhook endpoint was disabled after sustained failure; resuming it sends again."""

    routing_key = RoutingKey.WEBHOOK_DISABLED
    audit_action = "webhook.disable"
    failing_since: AwareDatetime = Field(description="First failure after the last success.")
    consecutive_failures: int = Field(ge=1, description="Attempts failed in a row.")
    reason: str = Field(description="Why, for operators.")


class WebhookAttemptFacts(WebhookEndpointEvent):
    """How one attempt ended: never the secret, the body or the receiver's answer."""

    outcome: WebhookOutcome = Field(description="Stable outcome code.")
    status: int | None = Field(description="HTTP status of the answer, if one came.")
    latency_ms: float = Field(ge=0, description="From the lookup to the answer, milliseconds.")

    def audit_result(self) -> str:
        """Success when delivered, else the outcome."""
        return "success" if self.outcome == "delivered" else f"failure: {self.outcome}"


class WebhookTested(WebhookAttemptFacts):
    """A test event was sent to an endpoint on request (once, no retry)."""

    routing_key = RoutingKey.WEBHOOK_TESTED
    audit_action = "webhook.test"


class DeliveryAttempted(WebhookAttemptFacts):
    """One attempt to deliver one event to one endpoint."""

    routing_key = RoutingKey.DELIVERY_ATTEMPTED
    audit_action = "webhook.deliver"
    message_id: str = Field(description="Id of the message (one event to one endpoint).")
    webhook_id: str = Field(description="Its Standard Webhooks id (webhook-id header).")
    event_id: str = Field(description="Id of the event delivered.")
    event_type: str = Field(description="Routing key of the event delivered.")
    attempt: int = Field(ge=1, description="Which attempt this was, from 1.")
    next_attempt_at: AwareDatetime | None = Field(
        description="When it is tried again; None once delivered or dead."
    )


class DeliveryDeadLettered(WebhookEndpointEvent):
    """Every retry of a message failed: it is a dead letter, listable and replayable."""

    routing_key = RoutingKey.DELIVERY_DEAD_LETTERED
    audit_action = "webhook.dead_letter"
    message_id: str = Field(description="Id of the message.")
    event_id: str = Field(description="Id of the event it carries.")
    event_type: str = Field(description="Routing key of that event.")
    attempts: int = Field(ge=1, description="Attempts made.")

    def audit_result(self) -> str:
        """Always a failure."""
        return "failure: retries_exhausted"


class DeliveryReplayed(WebhookEndpointEvent):
    """A dead letter was put back to be delivered, its retries started over."""

    routing_key = RoutingKey.DELIVERY_REPLAYED
    audit_action = "webhook.replay"
    message_id: str = Field(description="Id of the message.")
    event_id: str = Field(description="Id of the event it carries.")


class SubscriptionEvent(EventData):
    """Something happened to an AMQP subscription (its id is the event's subject too)."""

    subscription_id: str = Field(description="Id of the subscription (its broker user name).")


class SubscriptionCreated(SubscriptionEvent):
    """An AMQP subscription was created; its password is never in an event."""

    routing_key = RoutingKey.SUBSCRIPTION_CREATED
    audit_action = "subscription.create"


class SubscriptionDeleted(SubscriptionEvent):
    """An AMQP subscription was deleted: its user may no longer log in, its tap and queues go."""

    routing_key = RoutingKey.SUBSCRIPTION_DELETED
    audit_action = "subscription.delete"


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.routing_key.value: cls
    for cls in (
        LoginSucceeded,
        LoginFailed,
        SessionCreated,
        SessionRevoked,
        UserCreated,
        UserUpdated,
        UserDisabled,
        UserDeleted,
        SessionRefreshed,
        AccountLocked,
        AccountUnlocked,
        ApiKeyCreated,
        ApiKeyRotated,
        ApiKeyRevoked,
        RoleAssigned,
        RoleRemoved,
        AuthorizationDenied,
        SecretWritten,
        SecretDeleted,
        SecretRotated,
        SecretRead,
        SecretVersionDestroyed,
        ProviderRegistered,
        ProviderUpdated,
        ProviderRemoved,
        JobRequested,
        JobStarted,
        JobProgressed,
        JobCompleted,
        JobFailed,
        JobCancelRequested,
        JobCancelled,
        RequestCompleted,
        RefusalsSummarized,
        IdentityRequestRejected,
        PolicyRequestRejected,
        SecretsRequestRejected,
        ExporterRequestRejected,
        AuditRequestRejected,
        EventQuarantined,
        CheckpointSigned,
        RetentionCut,
        HoldPlaced,
        HoldLifted,
        WebhooksRequestRejected,
        WebhookCreated,
        WebhookUpdated,
        WebhookPaused,
        WebhookResumed,
        WebhookDeleted,
        WebhookSecretRotated,
        WebhookDisabled,
        WebhookTested,
        DeliveryAttempted,
        DeliveryDeadLettered,
        DeliveryReplayed,
        SubscriptionCreated,
        SubscriptionDeleted,
    )
}
"""Payload class of each routing key."""
