"""The check every service runs before acting on a request or command from the bus.

Three signers vouch for a request (docs/security.md, decisions 0006 and 0027): identity for
the principal (assertion), policy for the permission and the operations it allows (grant), the
gateway for this one request (seal: request ID, client address, actor, operation, target). A
guarded request must carry all that its operation needs, each naming the same actor, and a
seal this process has not accepted before.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import RequestRejected
from hypersdk_contracts.operations import follows
from hypersdk_kit.bus import EventPublisher
from hypersdk_kit.trust import MAX_CLOCK_SKEW_SECONDS, AssertionRejectedError, AssertionVerifier

REFUSED = "The request carries no valid authorization for this operation."
SEAL_TYPE = "request"
"""``typ`` of a request seal."""


class SeenSeals:
    """Seals this process has admitted, each kept until it can no longer verify.

    In-process and so per replica: RabbitMQ hands a request to one replica, and a seal replayed
    to another replica of the same service within its lifetime is not recognised there (the
    seal's short life and its binding to request, operation and target bound what that buys;
    decision 0027). Memory grows with admitted requests per second times the seal lifetime.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """Record ``key``; False if it was recorded before and has not expired since."""
        now = self._clock()
        # Seals are admitted in about the order they expire (one lifetime for all of them).
        while self._until:
            oldest, until = next(iter(self._until.items()))
            if until >= now:
                break
            del self._until[oldest]
        if key in self._until:
            return False
        self._until[key] = expires_at + MAX_CLOCK_SKEW_SECONDS
        return True


# The seal admitted last in this task, with the very context object it came in: a handler
# that checks its request a second time (identity issuing a key reads the caller's scopes
# after the grant was checked) is the same use of the seal, not a replay. A replay arrives as a
# new message, so as another object, and meets the seen-seal check.
_ADMITTED: ContextVar[tuple[RequestContext, str, SeenSeals, dict[str, Any]] | None] = ContextVar(
    "hypersdk_admitted_seal", default=None
)


@dataclass(frozen=True)
class QueuedGrace:
    """How long after their expiry a queued command's seal and grant still back its follow-ups.

    An export command carries its request's seal and grant to the worker, which may start it
    minutes later; what the worker then asks on the requester's behalf (the provider's
    credential) is checked against those, expired or not, up to ``grace_seconds``: the same
    bound the worker applies to the command itself.
    """

    sealed_operation: str
    grace_seconds: int


@dataclass(frozen=True)
class RequestGuard:
    """Verifies seals (gateway), grants (policy) and principal assertions (identity).

    A missing verifier means the service was not given the key to check with: it then refuses
    every request that needs it (fail closed). Every refusal is published, and so audited.
    """

    events: EventPublisher
    rejected: type[RequestRejected]
    grants: AssertionVerifier | None = None
    principals: AssertionVerifier | None = None
    seals: AssertionVerifier | None = None
    seen: SeenSeals = field(default_factory=SeenSeals)

    async def admit(
        self, *, operation: str, context: RequestContext, target: str | None = None
    ) -> dict[str, Any]:
        """The claims of the request's seal, if it was made for this very request.

        For operations that need no principal (logging in); the others check the seal through
        :meth:`authorize` or :meth:`authenticate`.
        """
        try:
            claims = self._admit(operation=operation, context=context, target=target)
        except AssertionRejectedError as exc:
            await self.refuse(operation=operation, reason=exc.reason, context=context)
        return claims

    async def authorize(
        self,
        *,
        operation: str,
        context: RequestContext,
        permissions: frozenset[str],
        target: str | None = None,
        queued: QueuedGrace | None = None,
    ) -> dict[str, Any]:
        """The grant's claims if it allows one of ``permissions`` for this very request.

        With ``queued``, a follow-up of the queued operation it names may come after its seal
        and grant expired (the command waited in a work queue), by at most its grace.
        """
        try:
            if self.grants is None:
                raise AssertionRejectedError("no_trust_anchor")
            _require_actor(context)
            grace = 0 if queued is None else queued.grace_seconds
            seal = self._admit(
                operation=operation, context=context, target=target, grace_seconds=grace
            )
            if queued is not None and grace and seal.get("op") != queued.sealed_operation:
                grace = 0  # no grace but for a follow-up of the queued operation
                verify_seal(self.seals, context.seal)
            claims = self.grants.verify(context.grant, grace_seconds=grace)
            check_grant(claims, context=context, permissions=permissions, operation=operation)
        except AssertionRejectedError as exc:
            await self.refuse(operation=operation, reason=exc.reason, context=context)
        return claims

    async def authenticate(
        self, *, operation: str, context: RequestContext, target: str | None = None
    ) -> dict[str, Any]:
        """The claims of the principal assertion of the request's actor."""
        try:
            if self.principals is None:
                raise AssertionRejectedError("no_trust_anchor")
            _require_actor(context)
            self._admit(operation=operation, context=context, target=target)
            claims = self.principals.verify(context.assertion)
            if claims.get("typ") != "principal":
                raise AssertionRejectedError("malformed_assertion")
            if claims.get("sub") != context.actor:
                raise AssertionRejectedError("actor_mismatch")
        except AssertionRejectedError as exc:
            await self.refuse(operation=operation, reason=exc.reason, context=context)
        return claims

    def _admit(
        self,
        *,
        operation: str,
        context: RequestContext,
        target: str | None,
        grace_seconds: int = 0,
    ) -> dict[str, Any]:
        admitted = _ADMITTED.get()
        if (
            admitted is not None
            and admitted[0] is context
            and admitted[1] == operation
            and admitted[2] is self.seen
        ):
            return admitted[3]
        claims = verify_seal(self.seals, context.seal, grace_seconds=grace_seconds)
        check_seal(claims, context=context, operation=operation, target=target)
        # A follow-up (a question the served service asks on its caller's behalf, such as
        # policy.permissions_of while identity issues a key) may come more than once under one
        # seal; follow-ups are queries or the export command, whose worker checks its job.
        primary = claims.get("op") == operation
        if primary and not self.seen.first_use(
            f"{claims.get('jti')} {operation}", expires_at=claims["exp"]
        ):
            raise AssertionRejectedError("seal_replayed")
        _ADMITTED.set((context, operation, self.seen, claims))
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


def _require_actor(context: RequestContext) -> None:
    """A request that needs a principal and names none is refused, never waved through."""
    if not context.actor:
        raise AssertionRejectedError("missing_actor")


def verify_seal(
    verifier: AssertionVerifier | None,
    seal: str | None,
    *,
    check_expiry: bool = True,
    grace_seconds: int = 0,
) -> dict[str, Any]:
    """The claims of a seal the gateway signed; reasons are prefixed ``seal_`` or ``missing_``."""
    if verifier is None:
        raise AssertionRejectedError("no_trust_anchor")
    if not seal:
        raise AssertionRejectedError("missing_seal")
    try:
        claims = verifier.verify(seal, check_expiry=check_expiry, grace_seconds=grace_seconds)
    except AssertionRejectedError as exc:
        raise AssertionRejectedError(f"seal_{exc.reason}") from exc
    if claims.get("typ") != SEAL_TYPE or not isinstance(claims.get("jti"), str):
        raise AssertionRejectedError("seal_malformed_assertion")
    return claims


def check_seal(
    claims: dict[str, Any], *, context: RequestContext, operation: str, target: str | None
) -> None:
    """A verified seal must name this request, its client, its actor, operation and target.

    The operation is the sealed one, or one of its follow-ups (made by the service that served
    the sealed operation, with the same context); a follow-up's own target is that service's
    choice, so only the sealed operation's target is checked.
    """
    if not claims.get("rid") or claims["rid"] != context.request_id:
        raise AssertionRejectedError("request_mismatch")
    if claims.get("ip") != context.source_ip:
        raise AssertionRejectedError("address_mismatch")
    if claims.get("sub") != context.actor:
        raise AssertionRejectedError("actor_mismatch")
    sealed = claims.get("op")
    if not isinstance(sealed, str) or not follows(operation, sealed):
        raise AssertionRejectedError("operation_mismatch")
    if sealed == operation and claims.get("res") != target:
        raise AssertionRejectedError("target_mismatch")


def check_grant(
    claims: dict[str, Any],
    *,
    context: RequestContext,
    permissions: frozenset[str],
    operation: str,
) -> None:
    """A verified grant must be a grant, for one of ``permissions``, this operation and actor.

    A grant is not tied to one request: the gateway reuses it for the same route while it
    lives (60 s) and drops it on any revocation (decision 0015); the seal ties each use of it
    to one request (decision 0027).
    """
    if claims.get("typ") != "grant":
        raise AssertionRejectedError("malformed_assertion")
    _require_actor(context)
    if claims.get("perm") not in permissions:
        raise AssertionRejectedError("permission_not_granted")
    allowed = claims.get("op")
    if not isinstance(allowed, list) or operation not in allowed:
        raise AssertionRejectedError("operation_not_granted")
    if claims.get("sub") != context.actor:
        raise AssertionRejectedError("actor_mismatch")
