"""API keys: per-user credentials for programs, limited to scopes, shown exactly once.

The key is ``hsdk_k_`` + 32 random base62 characters + a 6-character CRC32 checksum (see
``hypersdk_contracts.credentials``). Only its SHA-256 is stored: the key carries ~190 bits from
the CSPRNG, so a fast hash is as good as a slow one here (nothing to guess, no dictionary), and
every API call can be checked without bcrypt's 240 ms. Gateways cache a verified key for
seconds; revoking one records ``identity.apikey.revoked`` with the revocation, and the outbox
publishes it right after the commit, before the answer as a rule (decision 0021), which empties
every replica's cache. If that publish fails, the relay retries it and the caches still expire
within their lifetime (decision 0015).

Every key operation is checked here against the caller's verified principal, not trusted from
the gateway (decision 0025):

- a key issued or rotated carries only scopes that its owner holds now *and* that the caller
  holds now (asked of policy; for a caller using an API key, narrowed to that key's scopes):
  nobody gets a credential with more than they have themselves;
- a caller manages its own keys with ``apikeys:manage``; another user's keys (issuing, listing,
  rotating, revoking) also need ``users:manage`` in the caller's effective permissions. Without
  it another user's key is "not found", as another user's session is.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypersdk_contracts.credentials import is_well_formed_api_key, new_api_key
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import ApiKeyCreated, ApiKeyRevoked, ApiKeyRotated
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import ApiKeyView, IssuedApiKey, Principal
from hypersdk_identity.core.models import ApiKey, User
from hypersdk_identity.core.pam import PamSupport, usable_owner
from hypersdk_identity.core.service import is_uuid
from hypersdk_identity.ports.outbound import ApiKeyStore, PermissionDirectory, UserStore
from hypersdk_kit.ports import UnitOfWork

HINT_LENGTH = 4


def hash_api_key(key: str) -> bytes:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).digest()


def _unauthenticated() -> ServiceError:
    return ServiceError(ErrorCode.UNAUTHENTICATED, "The API key is not valid.")


def _no_such_key() -> ServiceError:
    return ServiceError(ErrorCode.NOT_FOUND, "No working API key with that id.")


MANAGE_OTHERS = Permission.USERS_MANAGE.value


@dataclass(frozen=True)
class Caller:
    """Who asks for a key operation, from its principal assertion once verified.

    ``key_scopes`` is None for a session (all of the user's permissions), else the scopes of the
    API key making the call; ``external_roles`` are the caller's PAM group roles.
    """

    username: str
    key_scopes: tuple[str, ...] | None = None
    external_roles: tuple[str, ...] = ()


def _not_yours() -> ServiceError:
    return ServiceError(
        ErrorCode.FORBIDDEN, "Managing another user's API keys needs the users:manage permission."
    )


class ApiKeyService:
    """Issue, list, rotate, revoke and authenticate API keys."""

    def __init__(
        self,
        *,
        keys: ApiKeyStore,
        users: UserStore,
        uow: UnitOfWork,
        permissions: PermissionDirectory,
        pam: PamSupport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._keys = keys
        self._users = users
        self._uow = uow
        self._permissions = permissions
        self._pam = pam
        self._clock = clock

    async def create(
        self,
        *,
        owner: str,
        name: str,
        scopes: list[str],
        expires_at: datetime | None,
        caller: Caller,
        context: RequestContext,
    ) -> IssuedApiKey:
        """Issue a key for ``owner`` with scopes both the owner and ``caller`` hold now."""
        wanted = _checked_scopes(scopes)
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "expires_at must be in the future.")
        caller_holds = await self._effective(caller, context)
        if owner != caller.username and MANAGE_OTHERS not in caller_holds:
            raise _not_yours()  # before looking the owner up: nothing to learn of other users
        user = await self._active_owner(owner)
        beyond = await self._beyond(
            user, wanted=wanted, caller=caller, context=context, caller_holds=caller_holds
        )
        if beyond is None:
            raise _not_yours()
        if beyond:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED,
                "A key's scopes must be permissions both its owner and you hold; "
                f"not held: {', '.join(beyond)}.",
            )
        secret = new_api_key()
        key = ApiKey(
            id=str(uuid.uuid4()),
            owner=owner,
            name=name,
            key_hash=hash_api_key(secret),
            hint=secret[-HINT_LENGTH:],
            scopes=wanted,
            created_at=now,
            created_by=context.actor,
            expires_at=expires_at,
        )
        async with self._uow.transaction():
            await self._keys.add(key)
            await self._uow.record(
                ApiKeyCreated(
                    key_id=key.id,
                    owner=owner,
                    name=name,
                    scopes=list(wanted),
                    expires_at=expires_at,
                ),
                subject=f"apikey/{key.id}",
                context=context,
            )
        return IssuedApiKey(key=secret, api_key=_view(key))

    async def list_keys(
        self, *, owner: str | None, caller: Caller, context: RequestContext
    ) -> list[ApiKeyView]:
        """Keys that work (or still work during a rotation grace period), never the keys.

        Without ``users:manage`` a caller sees its own keys only: no ``owner`` lists them, and
        another ``owner`` is refused.
        """
        if owner != caller.username and not await self._manages_others(caller, context):
            if owner is not None:
                raise _not_yours()
            owner = caller.username
        return [_view(key) for key in await self._keys.list(owner=owner, working_at=self._clock())]

    async def revoke(self, key_id: str, *, caller: Caller, context: RequestContext) -> None:
        """Make a key stop working now, on every gateway."""
        key = await self._keys.get(key_id) if is_uuid(key_id) else None
        if key is None or not await self._may_manage(key, caller, context):
            raise _no_such_key()
        async with self._uow.transaction():
            revoked = await self._keys.revoke(key_id, at=self._clock())
            if revoked is None:
                raise _no_such_key()
            await self._uow.record(
                ApiKeyRevoked(key_id=key_id, owner=revoked.owner, reason="revoked"),
                subject=f"apikey/{key_id}",
                context=context,
            )

    async def rotate(
        self, key_id: str, *, grace_seconds: int, caller: Caller, context: RequestContext
    ) -> IssuedApiKey:
        """Replace a key by a new one with the same owner, name, scopes and expiry.

        The old key stops working now, or after ``grace_seconds`` so that deployments can
        switch over; a key can be rotated once. The replacement is a new credential, held to
        the rule of a new key: its scopes must be held now by its owner and by the caller.
        """
        now = self._clock()
        old = await self._keys.get(key_id) if is_uuid(key_id) else None
        if old is None or not old.works_at(now) or not await self._may_manage(old, caller, context):
            raise _no_such_key()
        if old.replaced_by is not None:
            raise ServiceError(ErrorCode.CONFLICT, "That API key was already rotated.")
        owner = await self._active_owner(old.owner)
        beyond = await self._beyond(owner, wanted=old.scopes, caller=caller, context=context)
        if beyond is None:  # the caller lost users:manage since _may_manage asked
            raise _no_such_key()
        if beyond:
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                "The key's scopes go beyond what its owner and you hold now "
                f"({', '.join(beyond)}); revoke it and issue a narrower key.",
            )
        secret = new_api_key()
        replacement = ApiKey(
            id=str(uuid.uuid4()),
            owner=old.owner,
            name=old.name,
            key_hash=hash_api_key(secret),
            hint=secret[-HINT_LENGTH:],
            scopes=old.scopes,
            created_at=now,
            created_by=context.actor,
            expires_at=old.expires_at,
        )
        valid_until = now + timedelta(seconds=grace_seconds)
        if old.expires_at is not None:
            valid_until = min(valid_until, old.expires_at)
        async with self._uow.transaction():
            rotated = await self._keys.rotate(
                key_id, replacement=replacement, old_valid_until=valid_until
            )
            if not rotated:
                raise ServiceError(
                    ErrorCode.CONFLICT, "That API key was already rotated or revoked."
                )
            await self._uow.record(
                ApiKeyRotated(
                    key_id=key_id,
                    new_key_id=replacement.id,
                    owner=old.owner,
                    old_key_valid_until=valid_until,
                ),
                subject=f"apikey/{key_id}",
                context=context,
            )
        return IssuedApiKey(key=secret, api_key=_view(replacement))

    async def authenticate(self, key: str) -> Principal:
        """The principal of a working key: its owner, limited to the key's scopes."""
        if not is_well_formed_api_key(key):
            raise _unauthenticated()
        stored = await self._keys.by_hash(hash_api_key(key))
        now = self._clock()
        if (
            stored is None
            or not hmac.compare_digest(stored.key_hash, hash_api_key(key))
            or not stored.works_at(now)
        ):
            raise _unauthenticated()
        usable = await usable_owner(self._users, self._pam, stored.owner)
        if usable is None:
            raise _unauthenticated()
        _, external_roles = usable
        await self._keys.touch(stored.id, now)
        return Principal(
            username=stored.owner,
            kind="apikey",
            key_id=stored.id,
            scopes=list(stored.scopes),
            external_roles=external_roles,
            valid_until=stored.valid_until,
        )

    async def _effective(self, caller: Caller, context: RequestContext) -> frozenset[str]:
        """What the caller may do now: its user's permissions, narrowed to its key's scopes."""
        held = await self._permissions.permissions_of(
            caller.username, external_roles=list(caller.external_roles), context=context
        )
        if caller.key_scopes is not None:
            held &= frozenset(caller.key_scopes)
        return held

    async def _manages_others(self, caller: Caller, context: RequestContext) -> bool:
        return MANAGE_OTHERS in await self._effective(caller, context)

    async def _may_manage(self, key: ApiKey, caller: Caller, context: RequestContext) -> bool:
        """Its owner may manage a key; anyone else needs users:manage."""
        return key.owner == caller.username or await self._manages_others(caller, context)

    async def _beyond(
        self,
        owner: User,
        *,
        wanted: tuple[str, ...],
        caller: Caller,
        context: RequestContext,
        caller_holds: frozenset[str] | None = None,
    ) -> list[str] | None:
        """Scopes of ``wanted`` that the owner or the caller does not hold now, sorted.

        None when the caller may not manage the owner's keys at all. ``caller_holds``: the
        caller's effective permissions if they were just asked.
        """
        if caller_holds is None:
            caller_holds = await self._effective(caller, context)
        if owner.username != caller.username and MANAGE_OTHERS not in caller_holds:
            return None
        external_roles: list[str] = []
        if owner.source == "pam" and self._pam is not None:
            external_roles = await self._pam.roles_of_user(owner) or []
        owner_holds = await self._permissions.permissions_of(
            owner.username, external_roles=external_roles, context=context
        )
        return sorted(scope for scope in wanted if scope not in owner_holds & caller_holds)

    async def _active_owner(self, username: str) -> User:
        owner = await self._users.get(username)
        if owner is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No user of that name.")
        if owner.disabled:
            raise ServiceError(ErrorCode.CONFLICT, "The owner's account is disabled.")
        return owner


def _checked_scopes(scopes: list[str]) -> tuple[str, ...]:
    known = {permission.value for permission in Permission}
    unknown = sorted(set(scopes) - known)
    if unknown:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED, f"Unknown permissions in scopes: {', '.join(unknown)}."
        )
    if not scopes:
        raise ServiceError(ErrorCode.VALIDATION_FAILED, "An API key needs at least one scope.")
    return tuple(sorted(set(scopes)))


def _view(key: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        id=key.id,
        name=key.name,
        owner=key.owner,
        hint=key.hint,
        scopes=list(key.scopes),
        created_at=key.created_at,
        created_by=key.created_by,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
        replaced_by=key.replaced_by,
    )
