"""A short-lived cache of verified credentials and their grants, emptied by any revocation.

Identity checks a credential and policy signs a grant; both answers hold for a few seconds
unless something is revoked. The gateway keeps them for at most ``ttl_seconds`` (and never
past the credential's own end), and forgets everything as soon as any revocation event
arrives. While the revocation feed is not known to be live, nothing is served from the cache
(fail closed): see decision 0015.

Entries are keyed by the SHA-256 of the credential, never the credential itself.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import Principal, RpcRequest
from hypersdk_gateway.ports.outbound import Backend


def credential_key(credential: str) -> bytes:
    """What the cache stores a credential under."""
    return hashlib.sha256(credential.encode()).digest()


GRANT_REUSE_SECONDS = 45.0
"""How long a grant is reused; policy signs grants for 60 s, the rest is margin."""
REFRESH_FRACTION = 0.5
"""Past this share of its lifetime, a used entry is refreshed in the background."""


@dataclass
class _Entry:
    principal: Principal
    expires_at: float
    refresh_at: float
    refreshing: bool = False
    # "permission METHOD route" -> grant, obtained at (a grant names one route's operations)
    grants: dict[str, tuple[str, float]] = field(default_factory=dict)


def _same_principal(one: Principal, other: Principal) -> bool:
    """Whether two answers of identity describe the same principal (assertions aside)."""
    return one.model_copy(update={"assertion": None}) == other.model_copy(
        update={"assertion": None}
    )


class CredentialCache:
    """Principals by credential, each with the grants policy signed for it, per route.

    ``generation`` changes on every invalidation; a lookup that went to identity or policy
    stores its answer only if no invalidation happened meanwhile (``remember_*`` take the
    generation read before asking), so a revocation racing with a lookup is never undone.

    An entry used past half its lifetime is due for a refresh (``should_refresh``): identity is
    asked again in the background while the entry keeps serving, so an active credential does
    not wait for identity every ``ttl_seconds``. A refreshed entry for the same principal keeps
    its grants while they are younger than ``GRANT_REUSE_SECONDS``. Nothing is ever served
    past its own lifetime.
    """

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._live = False
        self.generation = 0
        self.hits = 0
        self.misses = 0

    @property
    def live(self) -> bool:
        """Whether answers are served from the cache (the revocation feed is live)."""
        return self._live and self.ttl_seconds > 0

    def resume(self) -> None:
        """The revocation feed is live (again): the cache may serve."""
        self.invalidate()
        self._live = True

    def suspend(self) -> None:
        """The revocation feed is down: serve nothing, forget everything."""
        self._live = False
        self.invalidate()

    def invalidate(self) -> None:
        """Forget every principal and grant (something was revoked)."""
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, key: bytes) -> _Entry | None:
        if not self.live:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            del self._entries[key]
            return None
        return entry

    def holds(self, key: bytes) -> bool:
        """Whether a fresh principal of the credential is cached (not counted as a hit)."""
        return self._entry(key) is not None

    def principal(self, key: bytes) -> Principal | None:
        """The cached principal of a credential, if still fresh."""
        entry = self._entry(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return entry.principal

    def should_refresh(self, key: bytes) -> bool:
        """Whether to ask identity again for a live entry now; true once per entry."""
        entry = self._entry(key)
        if entry is None or entry.refreshing or self._clock() < entry.refresh_at:
            return False
        entry.refreshing = True
        return True

    def remember_principal(self, key: bytes, principal: Principal, *, generation: int) -> None:
        """Keep what identity said about a credential, unless something was revoked since."""
        if not self.live or generation != self.generation:
            return
        lifetime = self.ttl_seconds
        if principal.valid_until is not None:
            lifetime = min(lifetime, (principal.valid_until - self._wall_clock()).total_seconds())
        if lifetime <= 0:
            self._entries.pop(key, None)
            return
        now = self._clock()
        entry = _Entry(
            principal=principal,
            expires_at=now + lifetime,
            refresh_at=now + lifetime * REFRESH_FRACTION,
        )
        previous = self._entry(key)
        if previous is not None and _same_principal(previous.principal, principal):
            entry.grants = {
                grant_key: (grant, obtained_at)
                for grant_key, (grant, obtained_at) in previous.grants.items()
                if now - obtained_at < GRANT_REUSE_SECONDS
            }
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, key: bytes, *, generation: int) -> None:
        """Drop one credential (identity no longer accepts it), unless revoked since anyway."""
        if generation == self.generation:
            self._entries.pop(key, None)

    def grant(self, key: bytes, grant_key: str) -> str | None:
        """A grant policy signed for this credential, permission and route, if still fresh."""
        entry = self._entry(key)
        if entry is None or grant_key not in entry.grants:
            return None
        grant, obtained_at = entry.grants[grant_key]
        if self._clock() - obtained_at >= GRANT_REUSE_SECONDS:
            return None
        return grant

    def remember_grant(self, key: bytes, grant_key: str, grant: str, *, generation: int) -> None:
        """Keep a grant with its credential's entry (it lives no longer than the entry)."""
        if generation != self.generation:
            return
        entry = self._entry(key)
        if entry is not None:
            entry.grants[grant_key] = (grant, self._clock())


REVOKING_QUEUES = frozenset(
    {
        RpcQueue.IDENTITY_LOGOUT,
        RpcQueue.IDENTITY_REFRESH,
        RpcQueue.IDENTITY_REVOKE_SESSION,
        RpcQueue.IDENTITY_REVOKE_USER_SESSIONS,
        RpcQueue.IDENTITY_UPDATE_USER,
        RpcQueue.IDENTITY_DELETE_USER,
        RpcQueue.IDENTITY_REVOKE_API_KEY,
        RpcQueue.IDENTITY_ROTATE_API_KEY,
        RpcQueue.POLICY_ASSIGN_ROLES,
    }
)
"""Requests after which a cached principal or grant may no longer be true."""


class InvalidatingBackend(Backend):
    """A backend that empties this replica's cache after any request that may revoke.

    The revocation feed empties it too, a moment later; this makes the replica that served
    the revocation consistent before it answers, whatever the order of deliveries.
    """

    def __init__(self, backend: Backend, cache: CredentialCache) -> None:
        self._backend = backend
        self._cache = cache

    async def ask(self, queue: str, request: RpcRequest) -> Any:
        """Ask, then forget every credential if the request may have revoked one."""
        try:
            return await self._backend.ask(queue, request)
        finally:
            # Also on failure: a timed-out revocation may still have happened.
            if queue in REVOKING_QUEUES:
                self._cache.invalidate()
