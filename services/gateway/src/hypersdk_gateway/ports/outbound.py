"""Outbound ports of the gateway."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.rpc import RpcRequest, UserView


class Backend(ABC):
    """Asks the owning service a question; raises ServiceError with its error code."""

    @abstractmethod
    async def ask(self, queue: str, request: RpcRequest) -> Any:
        """The JSON result of the request sent to ``queue``."""


class UserAccounts(ABC):
    """Identity's user accounts, as the gateway's user workflows drive them.

    Every method raises ServiceError with identity's error code.
    """

    @abstractmethod
    async def create(
        self,
        *,
        username: str,
        password: str | None,
        source: Literal["local", "pam"],
        context: RequestContext,
    ) -> UserView:
        """Create a local or PAM user."""

    @abstractmethod
    async def get(self, username: str, context: RequestContext) -> UserView:
        """One user."""

    @abstractmethod
    async def set_disabled(
        self, username: str, *, disabled: bool, context: RequestContext
    ) -> UserView:
        """Disable (ending sessions, revoking keys) or enable a user."""

    @abstractmethod
    async def delete(self, username: str, context: RequestContext) -> UserView:
        """Delete a user with their sessions and API keys; the account as it was."""

    @abstractmethod
    async def end_sessions(self, username: str, context: RequestContext) -> None:
        """End every session of a user whose roles changed."""


class RoleAssignments(ABC):
    """Policy's role assignments, as the gateway's user workflows drive them.

    Every method raises ServiceError with policy's error code.
    """

    @abstractmethod
    async def roles_of(self, username: str, context: RequestContext) -> list[str]:
        """Roles a user holds, sorted."""

    @abstractmethod
    async def assign(
        self,
        username: str,
        roles: list[str],
        context: RequestContext,
        *,
        generation: int | None,
    ) -> list[str]:
        """Replace a user's roles, for account ``generation``; the roles now held.

        ``generation`` None only to clear the roles of a name whose account is unknown
        (policy refuses roles by name only, decision 0041).
        """
