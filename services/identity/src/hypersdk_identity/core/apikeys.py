"""API keys: per-user credentials for programs, limited to scopes, shown exactly once.

The key is ``hsdk_k_`` + 32 random base62 characters + a 6-character CRC32 checksum (see
``hypersdk_contracts.credentials``). Only its SHA-256 is stored: the key carries ~190 bits from
the CSPRNG, so a fast hash is as good as a slow one here (nothing to guess, no dictionary), and
every API call can be checked without bcrypt's 240 ms. Gateways cache a verified key for
seconds; revoking one publishes ``identity.apikey.revoked`` (confirmed) before answering, which
empties every replica's cache, so a revoked key stops working everywhere at once.

A new key's scopes are checked here, not trusted from the caller: they must be permissions the
owner holds now (asked of policy) and, when an API key issues the key, within its own scopes.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable, Sequence
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
        calling_key_scopes: Sequence[str] | None,
        context: RequestContext,
    ) -> IssuedApiKey:
        """Issue a key for ``owner`` with scopes the owner holds now.

        ``calling_key_scopes`` are the scopes of the API key making the call (from its verified
        assertion), None when the caller uses a session: a key cannot mint a broader key.
        """
        wanted = _checked_scopes(scopes)
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "expires_at must be in the future.")
        user = await self._active_owner(owner)
        await self._check_held(
            user, wanted=wanted, calling_key_scopes=calling_key_scopes, context=context
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

    async def list_keys(self, *, owner: str | None) -> list[ApiKeyView]:
        """Keys that work (or still work during a rotation grace period), never the keys."""
        return [_view(key) for key in await self._keys.list(owner=owner, working_at=self._clock())]

    async def revoke(self, key_id: str, context: RequestContext) -> None:
        """Make a key stop working now, on every gateway."""
        if not is_uuid(key_id):
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
        self, key_id: str, *, grace_seconds: int, context: RequestContext
    ) -> IssuedApiKey:
        """Replace a key by a new one with the same owner, name, scopes and expiry.

        The old key stops working now, or after ``grace_seconds`` so that deployments can
        switch over; a key can be rotated once.
        """
        now = self._clock()
        old = await self._keys.get(key_id) if is_uuid(key_id) else None
        if old is None or not old.works_at(now):
            raise _no_such_key()
        if old.replaced_by is not None:
            raise ServiceError(ErrorCode.CONFLICT, "That API key was already rotated.")
        await self._active_owner(old.owner)
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

    async def _check_held(
        self,
        owner: User,
        *,
        wanted: tuple[str, ...],
        calling_key_scopes: Sequence[str] | None,
        context: RequestContext,
    ) -> None:
        """Refuse scopes the owner does not hold now, or the calling key does not have."""
        external_roles: list[str] = []
        if owner.source == "pam" and self._pam is not None:
            external_roles = await self._pam.roles_of_user(owner) or []
        allowed = set(
            await self._permissions.permissions_of(
                owner.username, external_roles=external_roles, context=context
            )
        )
        if calling_key_scopes is not None:
            allowed &= set(calling_key_scopes)
        beyond = [scope for scope in wanted if scope not in allowed]
        if beyond:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED,
                "A key's scopes must be permissions its owner holds (and the calling key's); "
                f"not held: {', '.join(beyond)}.",
            )

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
