"""Roles and permissions: exactly the matrix of docs/contracts.md."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    """The ten permissions an API call can require."""

    VMS_BROWSE = "vms:browse"
    JOBS_VIEW = "jobs:view"
    VMS_EXPORT = "vms:export"
    JOBS_CANCEL = "jobs:cancel"
    PROVIDERS_CONFIGURE = "providers:configure"
    USERS_MANAGE = "users:manage"
    APIKEYS_MANAGE = "apikeys:manage"
    AUDIT_VIEW = "audit:view"
    SECRETS_MANAGE = "secrets:manage"
    SYSTEM_CONFIGURE = "system:configure"


class Role(StrEnum):
    """The four roles a principal can hold."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    AUDITOR = "auditor"


_EVERYONE = frozenset({Permission.VMS_BROWSE, Permission.JOBS_VIEW})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: _EVERYONE
    | {Permission.VMS_EXPORT, Permission.JOBS_CANCEL, Permission.PROVIDERS_CONFIGURE},
    Role.VIEWER: _EVERYONE,
    Role.AUDITOR: _EVERYONE | {Permission.AUDIT_VIEW},
}
"""Seed matrix the policy service loads; the policy service owns it at run time."""
