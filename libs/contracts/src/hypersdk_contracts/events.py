"""Event payloads: facts, in past tense. None of them carries a password, token or key.

Each payload names its routing key and the audit action it stands for, so the audit service
can turn any event into an audit entry without knowing the producer.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from hypersdk_contracts.base import Message
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
    reason: Literal["invalid_credentials", "account_disabled"] = Field(
        description="Why it was refused (the client only ever sees invalid_credentials)."
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
    reason: Literal["logout"] = Field(description="Why it ended.")


class UserCreated(EventData):
    """A local user account was created."""

    routing_key = RoutingKey.USER_CREATED
    audit_action = "user.create"
    username: str = Field(description="The new user.")


class RoleAssigned(EventData):
    """A user's set of roles was replaced."""

    routing_key = RoutingKey.ROLE_ASSIGNED
    audit_action = "role.assign"
    username: str = Field(description="Whose roles changed.")
    roles: list[str] = Field(description="The roles the user now holds.")


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


class ProviderRegistered(EventData):
    """A provider connection was registered."""

    routing_key = RoutingKey.PROVIDER_REGISTERED
    audit_action = "provider.register"
    name: str = Field(description="Provider name.")
    type: str = Field(description="Provider type.")
    credential_ref: str | None = Field(description="Secret path of its credential, if any.")


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


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.routing_key.value: cls
    for cls in (
        LoginSucceeded,
        LoginFailed,
        SessionCreated,
        SessionRevoked,
        UserCreated,
        RoleAssigned,
        AuthorizationDenied,
        SecretWritten,
        SecretDeleted,
        ProviderRegistered,
        ProviderRemoved,
        JobRequested,
        JobStarted,
        JobProgressed,
        JobCompleted,
        JobFailed,
        RequestCompleted,
    )
}
"""Payload class of each routing key."""
