"""Which operations each authorized route of the API makes on the bus (decision 0027).

The gateway asks policy for a grant naming exactly these operations and their follow-ups, so
a grant issued for one route cannot drive an operation that route never makes (a users:manage
grant of ``GET /users`` cannot create a user). Keep this table in step with the routes in
``http.py``: a route that asks a queue missing here is refused by the service it asks
(``operation_not_granted``), and a unit test checks that every route with a permission has
an entry and every entry a route.
"""

from __future__ import annotations

from hypersdk_contracts.names import RpcQueue as Q
from hypersdk_contracts.operations import with_follow_ups
from hypersdk_gateway.adapters.inbound.middleware import API_PREFIX

_ROUTES: dict[str, tuple[str, ...]] = {
    "GET /users": (Q.IDENTITY_LIST_USERS,),
    # The user is deleted again if assigning its roles fails (core/users.py, decision 0026).
    "POST /users": (Q.IDENTITY_CREATE_USER, Q.POLICY_ASSIGN_ROLES, Q.IDENTITY_DELETE_USER),
    "GET /users/{username}": (Q.IDENTITY_GET_USER, Q.POLICY_ROLES_OF),
    "PATCH /users/{username}": (
        Q.IDENTITY_UPDATE_USER,
        Q.IDENTITY_GET_USER,
        Q.POLICY_ROLES_OF,
        Q.POLICY_ASSIGN_ROLES,
        Q.IDENTITY_REVOKE_USER_SESSIONS,
    ),
    "DELETE /users/{username}": (Q.IDENTITY_DELETE_USER, Q.POLICY_ASSIGN_ROLES),
    "POST /users/{username}/unlock": (Q.IDENTITY_UNLOCK_USER,),
    "GET /api-keys": (Q.IDENTITY_LIST_API_KEYS,),
    "POST /api-keys": (Q.IDENTITY_CREATE_API_KEY,),
    "DELETE /api-keys/{key_id}": (Q.IDENTITY_REVOKE_API_KEY,),
    "POST /api-keys/{key_id}/rotate": (Q.IDENTITY_ROTATE_API_KEY,),
    "GET /providers": (Q.EXPORTER_LIST_PROVIDERS,),
    "GET /providers/{name}": (Q.EXPORTER_GET_PROVIDER,),
    "POST /providers": (Q.EXPORTER_REGISTER_PROVIDER,),
    "PUT /providers/{name}": (Q.EXPORTER_UPDATE_PROVIDER,),
    "DELETE /providers/{name}": (Q.EXPORTER_REMOVE_PROVIDER,),
    "GET /vms": (Q.EXPORTER_LIST_VMS,),
    "GET /vms/{vm_id:path}": (Q.EXPORTER_GET_VM,),
    "POST /exports": (Q.EXPORTER_CREATE_EXPORT,),
    "GET /jobs": (Q.EXPORTER_LIST_JOBS,),
    "GET /jobs/{job_id}": (Q.EXPORTER_GET_JOB,),
    "POST /jobs/{job_id}/cancel": (Q.EXPORTER_CANCEL_JOB,),
    "GET /secrets": (Q.SECRETS_LIST,),
    "POST /secrets/{path:path}/rotate": (Q.SECRETS_ROTATE,),
    "PUT /secrets/{path:secretpath}": (Q.SECRETS_PUT,),
    "DELETE /secrets/{path:secretpath}": (Q.SECRETS_DELETE,),
    "GET /audit/events": (Q.AUDIT_LIST_EVENTS,),
    "GET /audit/verify": (Q.AUDIT_VERIFY,),
    "GET /audit/verifications": (Q.AUDIT_LIST_VERIFICATIONS,),
    "POST /audit/verifications": (Q.AUDIT_START_VERIFICATION,),
    "GET /audit/verifications/{run_id}": (Q.AUDIT_GET_VERIFICATION,),
    "GET /audit/holds": (Q.AUDIT_LIST_HOLDS,),
    "POST /audit/holds": (Q.AUDIT_PLACE_HOLD,),
    "DELETE /audit/holds/{hold_id}": (Q.AUDIT_LIFT_HOLD,),
    "GET /audit/quarantine": (Q.AUDIT_LIST_QUARANTINE,),
    "GET /audit/checkpoints": (Q.AUDIT_LIST_CHECKPOINTS,),
    "GET /audit/checkpoints/latest": (Q.AUDIT_LIST_CHECKPOINTS,),
    "POST /audit/checkpoints": (Q.AUDIT_CHECKPOINT,),
    "GET /audit/proofs/inclusion": (Q.AUDIT_PROVE_INCLUSION,),
    "GET /audit/proofs/consistency": (Q.AUDIT_PROVE_CONSISTENCY,),
    "GET /audit/export": (Q.AUDIT_PUBLIC_KEYS, Q.AUDIT_LIST_CHECKPOINTS, Q.AUDIT_LIST_EVENTS),
    "GET /system/config": (),
    "PUT /system/config": (),
    "GET /webhooks": (Q.WEBHOOKS_LIST,),
    "POST /webhooks": (Q.WEBHOOKS_CREATE,),
    "GET /webhooks/{webhook_id}": (Q.WEBHOOKS_GET,),
    "PATCH /webhooks/{webhook_id}": (Q.WEBHOOKS_UPDATE,),
    "DELETE /webhooks/{webhook_id}": (Q.WEBHOOKS_DELETE,),
    "POST /webhooks/{webhook_id}/pause": (Q.WEBHOOKS_PAUSE,),
    "POST /webhooks/{webhook_id}/resume": (Q.WEBHOOKS_RESUME,),
    "POST /webhooks/{webhook_id}/rotate": (Q.WEBHOOKS_ROTATE_SECRET,),
    "POST /webhooks/{webhook_id}/test": (Q.WEBHOOKS_TEST,),
    "GET /webhooks/{webhook_id}/dead-letters": (Q.WEBHOOKS_LIST_DEAD_LETTERS,),
    "POST /webhooks/{webhook_id}/dead-letters/{message_id}/replay": (Q.WEBHOOKS_REPLAY,),
    "GET /subscriptions": (Q.SUBSCRIPTIONS_LIST,),
    "POST /subscriptions": (Q.SUBSCRIPTIONS_CREATE,),
    "GET /subscriptions/{subscription_id}": (Q.SUBSCRIPTIONS_GET,),
    "DELETE /subscriptions/{subscription_id}": (Q.SUBSCRIPTIONS_DELETE,),
}

ROUTE_OPERATIONS: dict[str, list[str]] = {
    f"{route.split(' ', 1)[0]} {API_PREFIX}{route.split(' ', 1)[1]}": sorted(
        with_follow_ups(operations)
    )
    for route, operations in _ROUTES.items()
}
"""``"METHOD /api/v1/template"`` -> the operations a grant for that route names, sorted."""


def operations_of(resource: str) -> list[str]:
    """The operations of the route ``resource`` ("METHOD template"); none if not listed."""
    return ROUTE_OPERATIONS.get(resource, [])
