"""The check every service runs before acting on a request or command from the bus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import RequestRejected
from hypersdk_kit.bus import EventPublisher
from hypersdk_kit.trust import AssertionRejectedError, AssertionVerifier

REFUSED = "The request carries no valid authorization for this operation."


@dataclass(frozen=True)
class RequestGuard:
    """Verifies grants (signed by policy) and principal assertions (signed by identity).

    A missing verifier means the service was not given the key to check with: it then refuses
    every guarded request (fail closed). Every refusal is published, and so audited.
    """

    events: EventPublisher
    rejected: type[RequestRejected]
    grants: AssertionVerifier | None = None
    principals: AssertionVerifier | None = None

    async def authorize(
        self, *, operation: str, context: RequestContext, permissions: frozenset[str]
    ) -> dict[str, Any]:
        """The grant's claims if it allows one of ``permissions`` for this very request."""
        try:
            if self.grants is None:
                raise AssertionRejectedError("no_trust_anchor")
            claims = self.grants.verify(context.grant)
            check_grant(claims, context=context, permissions=permissions)
        except AssertionRejectedError as exc:
            await self.refuse(operation=operation, reason=exc.reason, context=context)
        return claims

    async def authenticate(self, *, operation: str, context: RequestContext) -> dict[str, Any]:
        """The claims of the principal assertion of the request's actor."""
        try:
            if self.principals is None:
                raise AssertionRejectedError("no_trust_anchor")
            claims = self.principals.verify(context.assertion)
            if claims.get("typ") != "principal":
                raise AssertionRejectedError("malformed_assertion")
            if context.actor is not None and claims.get("sub") != context.actor:
                raise AssertionRejectedError("actor_mismatch")
        except AssertionRejectedError as exc:
            await self.refuse(operation=operation, reason=exc.reason, context=context)
        return claims

    async def refuse(self, *, operation: str, reason: str, context: RequestContext) -> None:
        """Publish the refusal and raise ``forbidden``.

        The refused request's actor, address and request ID are unproven: the refusal names the
        claimed actor in its payload, not as its own actor (audit would quarantine an event
        whose actor no request seal backs).
        """
        await self.events.publish(
            self.rejected(operation=operation, reason=reason, claimed_actor=context.actor),
            subject=operation,
            context=RequestContext(traceparent=context.traceparent),
        )
        raise ServiceError(ErrorCode.FORBIDDEN, REFUSED)


def check_grant(
    claims: dict[str, Any], *, context: RequestContext, permissions: frozenset[str]
) -> None:
    """A verified grant must be a grant, for one of ``permissions``, for this actor.

    A grant is not tied to one request: the gateway reuses it while it lives (60 s) and drops
    it on any revocation (decision 0015).
    """
    if claims.get("typ") != "grant":
        raise AssertionRejectedError("malformed_assertion")
    if claims.get("perm") not in permissions:
        raise AssertionRejectedError("permission_not_granted")
    if context.actor is not None and claims.get("sub") != context.actor:
        raise AssertionRejectedError("actor_mismatch")
