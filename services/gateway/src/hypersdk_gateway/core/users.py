"""User administration: the workflows that span identity (accounts) and policy (roles).

Identity and policy are separate services with separate databases, so no transaction spans a
user and their roles. Each workflow orders its steps so that a failure between them leaves a
safe state, undoes what it must, and converges when repeated (every step is idempotent or
refused harmlessly the second time):

- **create**: unknown roles are refused before anything changes; the account is created, then
  its roles assigned. If assigning fails, the account is deleted again, so that the caller can
  simply retry (a failed create leaves no account behind that would answer 409).
- **update**: the disabled flag is identity's alone (one service, its own transaction). A role
  change stores the new roles, then ends the user's sessions; if either fails, the previous
  roles are put back, so the change happens with its session ending or not at all.
- **delete**: the account goes first (with its sessions and keys), then its role assignments.
  Policy also removes the assignments itself when it receives ``identity.user.deleted`` (its
  own durable queue), so they go even if the second call never happens; a repeated DELETE of an
  account identity no longer has clears leftover roles again before answering 404.

Roles are always assigned to one account: the generation identity gave it (decision 0041),
read from identity's answer in the same workflow. Policy refuses them for an account it saw
deleted, or when a newer account of the name holds roles, so a step that arrives late (a
restore, a clear) never changes the roles of an account created under the name meanwhile.

An undo that fails is logged and the original error is raised: the states it leaves are still
safe (an account without roles, roles that policy removes on ``identity.user.deleted``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.permissions import Role
from hypersdk_contracts.rpc import UserView
from hypersdk_gateway.ports.outbound import RoleAssignments, UserAccounts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserWithRoles:
    """A user and the roles policy says they hold."""

    user: UserView
    roles: list[str]


def known_roles(roles: list[str]) -> list[str]:
    """``roles`` sorted and de-duplicated; ``validation_failed`` if any is not a known role."""
    known = {role.value for role in Role}
    unknown = sorted(set(roles) - known)
    if unknown:
        raise ServiceError(ErrorCode.VALIDATION_FAILED, f"Unknown roles: {', '.join(unknown)}.")
    return sorted(set(roles))


class UserAdministration:
    """Create, read, update and delete users with their roles, across identity and policy."""

    def __init__(self, *, accounts: UserAccounts, roles: RoleAssignments) -> None:
        self._accounts = accounts
        self._roles = roles

    async def create(
        self,
        *,
        username: str,
        password: str | None,
        source: Literal["local", "pam"],
        roles: list[str],
        context: RequestContext,
    ) -> UserWithRoles:
        """Create the account, then assign its roles; no account is left if that fails."""
        wanted = known_roles(roles)
        user = await self._accounts.create(
            username=username, password=password, source=source, context=context
        )
        try:
            held = await self._roles.assign(username, wanted, context, generation=user.generation)
        except Exception:
            await _best_effort(self._accounts.delete(username, context), "delete", username)
            raise
        return UserWithRoles(user=user, roles=held)

    async def get(self, username: str, context: RequestContext) -> UserWithRoles:
        """The account and its roles."""
        user = await self._accounts.get(username, context)
        return UserWithRoles(user=user, roles=await self._roles.roles_of(username, context))

    async def update(
        self,
        username: str,
        *,
        roles: list[str] | None,
        disabled: bool | None,
        context: RequestContext,
    ) -> UserWithRoles:
        """Disable or enable, and/or replace the roles (ending the user's sessions)."""
        if roles is None and disabled is None:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "Give roles, disabled, or both.")
        wanted = None if roles is None else known_roles(roles)
        if disabled is not None:
            user = await self._accounts.set_disabled(username, disabled=disabled, context=context)
        else:
            user = await self._accounts.get(username, context)
        if wanted is None:
            return UserWithRoles(user=user, roles=await self._roles.roles_of(username, context))
        previous = await self._roles.roles_of(username, context)
        generation = user.generation
        try:
            held = await self._roles.assign(username, wanted, context, generation=generation)
            await self._accounts.end_sessions(username, context)
        except Exception:
            await _best_effort(
                self._roles.assign(username, previous, context, generation=generation),
                "restore roles",
                username,
            )
            raise
        return UserWithRoles(user=user, roles=held)

    async def delete(self, username: str, context: RequestContext) -> None:
        """Delete the account, then its role assignments (policy also does on the event)."""
        try:
            deleted = await self._accounts.delete(username, context)
        except ServiceError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                # A retry after a partial failure: the account is gone, its roles may not be.
                # Which account it was is unknown now: cleared by name (only takes roles away).
                await _best_effort(
                    self._roles.assign(username, [], context, generation=None),
                    "clear roles",
                    username,
                )
            raise
        await _best_effort(
            self._roles.assign(username, [], context, generation=deleted.generation),
            "clear roles",
            username,
        )


async def _best_effort(step: Awaitable[object], what: str, username: str) -> None:
    """Run a compensating or best-effort step; a failure is logged, never raised over another."""
    try:
        await step
    except Exception as exc:
        logger.warning(
            "user workflow step failed: %s",
            what,
            extra={"username": username, "error": type(exc).__name__},
        )
