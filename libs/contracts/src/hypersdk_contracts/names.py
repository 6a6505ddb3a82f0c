"""Exchange, queue and routing-key names on the bus.

Every name that two services must agree on lives here and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum

EVENTS_EXCHANGE = "hypersdk.events"
"""Durable topic exchange carrying every event; routing key ``<service>.<entity>.<verb>``."""

DEAD_LETTER_EXCHANGE = "hypersdk.dlx"
"""Direct exchange receiving rejected messages; routed by the original queue name."""

EVENT_TYPE_PREFIX = "io.hypersdk."
"""CloudEvents ``type`` is this prefix plus the routing key."""

AUDIT_EVENTS_QUEUE = "audit.events"
"""The audit service's queue, bound with ``#`` to the events exchange."""

EXPORT_JOBS_QUEUE = "exporter.jobs"
"""Durable work queue of export commands; exporter workers compete on it."""

WEBHOOKS_EVENTS_QUEUE = "webhooks.events"
"""The webhooks service's queue, bound with ``#``: each event becomes its endpoints' messages."""

PUBLIC_EXCHANGE = "hypersdk.public"
"""Durable topic exchange of the public events for external subscribers (decision 0054).

Only the webhooks service writes it: every genuine event, as its CloudEvent without the
internal seal, routed by its routing key. Subscribers never bind to it directly: each reads
its own tap, ``sub.<subscription id>``, which the webhooks service binds to it with ``#``.
"""

SUBSCRIPTION_RESOURCE_PREFIX = "sub."
"""Every broker name of a subscription starts ``sub.<id>``: its tap exchange, its queues."""

POLICY_USER_DELETIONS_QUEUE = "policy.user-deletions"
"""Policy's queue bound to ``identity.user.deleted``: a deleted user's roles are removed."""


def dead_letter_queue(queue: str) -> str:
    """Name of the dead-letter queue that holds what ``queue`` rejected."""
    return f"{queue}.dlq"


class RoutingKey(StrEnum):
    """Routing keys of every event, in past tense."""

    LOGIN_SUCCEEDED = "identity.login.succeeded"
    LOGIN_FAILED = "identity.login.failed"
    SESSION_CREATED = "identity.session.created"
    SESSION_REVOKED = "identity.session.revoked"
    USER_CREATED = "identity.user.created"
    USER_UPDATED = "identity.user.updated"
    USER_DISABLED = "identity.user.disabled"
    USER_DELETED = "identity.user.deleted"
    SESSION_REFRESHED = "identity.session.refreshed"
    ACCOUNT_LOCKED = "identity.account.locked"
    ACCOUNT_UNLOCKED = "identity.account.unlocked"
    APIKEY_CREATED = "identity.apikey.created"
    APIKEY_ROTATED = "identity.apikey.rotated"
    APIKEY_REVOKED = "identity.apikey.revoked"
    ROLE_ASSIGNED = "policy.role.assigned"
    ROLE_REMOVED = "policy.role.removed"
    AUTHORIZATION_DENIED = "policy.authorization.denied"
    SECRET_WRITTEN = "secrets.secret.written"  # noqa: S105 - a routing key, not a secret
    SECRET_DELETED = "secrets.secret.deleted"  # noqa: S105 - a routing key, not a secret
    SECRET_ROTATED = "secrets.secret.rotated"  # noqa: S105 - a routing key, not a secret
    SECRET_READ = "secrets.secret.read"  # noqa: S105 - a routing key, not a secret
    SECRET_VERSION_DESTROYED = "secrets.secret.version_destroyed"  # noqa: S105 - a routing key
    PROVIDER_REGISTERED = "exporter.provider.registered"
    PROVIDER_REMOVED = "exporter.provider.removed"
    PROVIDER_UPDATED = "exporter.provider.updated"
    JOB_REQUESTED = "exporter.job.requested"
    JOB_STARTED = "exporter.job.started"
    JOB_PROGRESSED = "exporter.job.progressed"
    JOB_COMPLETED = "exporter.job.completed"
    JOB_FAILED = "exporter.job.failed"
    JOB_CANCEL_REQUESTED = "exporter.job.cancel_requested"
    JOB_CANCELLED = "exporter.job.cancelled"
    REQUEST_COMPLETED = "gateway.request.completed"
    REFUSALS_SUMMARIZED = "gateway.refusals.summarized"
    IDENTITY_REQUEST_REJECTED = "identity.request.rejected"
    POLICY_REQUEST_REJECTED = "policy.request.rejected"
    SECRETS_REQUEST_REJECTED = "secrets.request.rejected"
    EXPORTER_REQUEST_REJECTED = "exporter.request.rejected"
    AUDIT_REQUEST_REJECTED = "audit.request.rejected"
    EVENT_QUARANTINED = "audit.event.quarantined"
    CHECKPOINT_SIGNED = "audit.checkpoint.signed"
    RETENTION_APPLIED = "audit.retention.applied"
    HOLD_PLACED = "audit.hold.placed"
    HOLD_LIFTED = "audit.hold.lifted"
    WEBHOOK_CREATED = "webhooks.endpoint.created"
    WEBHOOK_UPDATED = "webhooks.endpoint.updated"
    WEBHOOK_PAUSED = "webhooks.endpoint.paused"
    WEBHOOK_RESUMED = "webhooks.endpoint.resumed"
    WEBHOOK_DELETED = "webhooks.endpoint.deleted"
    WEBHOOK_SECRET_ROTATED = "webhooks.endpoint.secret_rotated"  # noqa: S105 - a routing key
    WEBHOOK_DISABLED = "webhooks.endpoint.disabled"
    WEBHOOK_TESTED = "webhooks.endpoint.tested"
    DELIVERY_ATTEMPTED = "webhooks.delivery.attempted"
    DELIVERY_DEAD_LETTERED = "webhooks.delivery.dead_lettered"
    DELIVERY_REPLAYED = "webhooks.delivery.replayed"
    SUBSCRIPTION_CREATED = "webhooks.subscription.created"
    SUBSCRIPTION_DELETED = "webhooks.subscription.deleted"
    WEBHOOKS_REQUEST_REJECTED = "webhooks.request.rejected"


class RpcQueue(StrEnum):
    """Request queues of synchronous questions (RabbitMQ request/reply)."""

    IDENTITY_LOGIN = "identity.rpc.login"
    IDENTITY_AUTHENTICATE = "identity.rpc.authenticate"
    IDENTITY_LOGOUT = "identity.rpc.logout"
    IDENTITY_CREATE_USER = "identity.rpc.create_user"
    IDENTITY_LIST_USERS = "identity.rpc.list_users"
    IDENTITY_GET_USER = "identity.rpc.get_user"
    IDENTITY_UPDATE_USER = "identity.rpc.update_user"
    IDENTITY_DELETE_USER = "identity.rpc.delete_user"
    IDENTITY_UNLOCK_USER = "identity.rpc.unlock_user"
    IDENTITY_REVOKE_USER_SESSIONS = "identity.rpc.revoke_user_sessions"
    IDENTITY_REFRESH = "identity.rpc.refresh"
    IDENTITY_LIST_SESSIONS = "identity.rpc.list_sessions"
    IDENTITY_REVOKE_SESSION = "identity.rpc.revoke_session"
    IDENTITY_AUTHENTICATE_API_KEY = "identity.rpc.authenticate_api_key"
    IDENTITY_CREATE_API_KEY = "identity.rpc.create_api_key"
    IDENTITY_LIST_API_KEYS = "identity.rpc.list_api_keys"
    IDENTITY_REVOKE_API_KEY = "identity.rpc.revoke_api_key"
    IDENTITY_ROTATE_API_KEY = "identity.rpc.rotate_api_key"
    POLICY_DECIDE = "policy.rpc.decide"
    POLICY_ASSIGN_ROLES = "policy.rpc.assign_roles"
    POLICY_ROLES_OF = "policy.rpc.roles_of"
    POLICY_PERMISSIONS_OF = "policy.rpc.permissions_of"
    SECRETS_PUT = "secrets.rpc.put_secret"
    SECRETS_DELETE = "secrets.rpc.delete_secret"
    SECRETS_LIST = "secrets.rpc.list_secrets"
    SECRETS_DESCRIBE = "secrets.rpc.describe_secret"
    SECRETS_RESOLVE_CREDENTIAL = "secrets.rpc.resolve_credential"
    SECRETS_ROTATE = "secrets.rpc.rotate_secret"
    EXPORTER_REGISTER_PROVIDER = "exporter.rpc.register_provider"
    EXPORTER_LIST_PROVIDERS = "exporter.rpc.list_providers"
    EXPORTER_GET_PROVIDER = "exporter.rpc.get_provider"
    EXPORTER_REMOVE_PROVIDER = "exporter.rpc.remove_provider"
    EXPORTER_UPDATE_PROVIDER = "exporter.rpc.update_provider"
    EXPORTER_LIST_VMS = "exporter.rpc.list_vms"
    EXPORTER_GET_VM = "exporter.rpc.get_vm"
    EXPORTER_CREATE_EXPORT = "exporter.rpc.create_export"
    EXPORTER_LIST_JOBS = "exporter.rpc.list_jobs"
    EXPORTER_GET_JOB = "exporter.rpc.get_job"
    EXPORTER_CANCEL_JOB = "exporter.rpc.cancel_job"
    AUDIT_VERIFY = "audit.rpc.verify"
    AUDIT_LIST_EVENTS = "audit.rpc.list_events"
    AUDIT_LIST_QUARANTINE = "audit.rpc.list_quarantine"
    AUDIT_CHECKPOINT = "audit.rpc.checkpoint"
    AUDIT_LIST_CHECKPOINTS = "audit.rpc.list_checkpoints"
    AUDIT_PROVE_INCLUSION = "audit.rpc.prove_inclusion"
    AUDIT_PROVE_CONSISTENCY = "audit.rpc.prove_consistency"
    AUDIT_PUBLIC_KEYS = "audit.rpc.public_keys"
    AUDIT_START_VERIFICATION = "audit.rpc.start_verification"
    AUDIT_GET_VERIFICATION = "audit.rpc.get_verification"
    AUDIT_LIST_VERIFICATIONS = "audit.rpc.list_verifications"
    AUDIT_LIST_HOLDS = "audit.rpc.list_holds"
    AUDIT_PLACE_HOLD = "audit.rpc.place_hold"
    AUDIT_LIFT_HOLD = "audit.rpc.lift_hold"
    WEBHOOKS_CREATE = "webhooks.rpc.create_endpoint"
    WEBHOOKS_LIST = "webhooks.rpc.list_endpoints"
    WEBHOOKS_GET = "webhooks.rpc.get_endpoint"
    WEBHOOKS_UPDATE = "webhooks.rpc.update_endpoint"
    WEBHOOKS_PAUSE = "webhooks.rpc.pause_endpoint"
    WEBHOOKS_RESUME = "webhooks.rpc.resume_endpoint"
    WEBHOOKS_DELETE = "webhooks.rpc.delete_endpoint"
    WEBHOOKS_ROTATE_SECRET = "webhooks.rpc.rotate_secret"  # noqa: S105 - a queue name
    WEBHOOKS_TEST = "webhooks.rpc.test_endpoint"
    WEBHOOKS_LIST_DEAD_LETTERS = "webhooks.rpc.list_dead_letters"
    WEBHOOKS_REPLAY = "webhooks.rpc.replay_message"
    SUBSCRIPTIONS_CREATE = "webhooks.rpc.create_subscription"
    SUBSCRIPTIONS_LIST = "webhooks.rpc.list_subscriptions"
    SUBSCRIPTIONS_GET = "webhooks.rpc.get_subscription"
    SUBSCRIPTIONS_DELETE = "webhooks.rpc.delete_subscription"
