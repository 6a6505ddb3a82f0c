"""AMQP subscriptions: external systems reading the public events from RabbitMQ (decision 0054).

A subscription is a broker user of its own, ``sb_`` and 24 hex digits, that RabbitMQ does not
know: the broker runs its HTTP auth backend after its internal one, and asks this service
(``adapters/inbound/broker_auth.py``) whether that user may log in, enter the virtual host and
use each resource. The answers are decided here, from the stored subscription only:

- log in with its password (stored as a SHA-256 digest: it is 256 random bits, not a phrase a
  person chose, so a slow hash adds nothing), never with a tag (no management access);
- declare (configure), bind (write) and consume (read) queues named ``sub.<id>.<name>``, at
  most :data:`MAX_QUEUES` names, each recorded when first declared;
- read its tap exchange ``sub.<id>``: the service declares it (internal, so nobody publishes
  to it) and binds it to ``hypersdk.public`` with ``#``; binding a queue to it with any
  routing-key pattern is the subscriber's filter;
- nothing else: no other queue or exchange, no write to any exchange (so no publishing and no
  dead-lettering into one), no other virtual host.

Deleting a subscription refuses its user at once, then removes its tap and its recorded
queues, so even a consumer on a connection opened earlier stops receiving. Both steps are
retried (:meth:`SubscriptionService.tear_down`) until done.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import SubscriptionCreated, SubscriptionDeleted
from hypersdk_contracts.names import SUBSCRIPTION_RESOURCE_PREFIX
from hypersdk_kit.ports import UnitOfWork
from hypersdk_webhooks.core.models import Subscription
from hypersdk_webhooks.ports.outbound import BrokerTaps, SubscriptionStore

logger = logging.getLogger(__name__)

MAX_QUEUES = 10
"""Queue names one subscription may declare (each is removed with it)."""
MAX_DESCRIPTION = 500
MAX_PASSWORD_LENGTH = 256
MAX_QUEUE_SUFFIX = 200
SUBSCRIPTION_ID = re.compile(r"sb_[0-9a-f]{24}")
QUEUE_SUFFIX = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_QUEUE_SUFFIX}}}")


def tap_of(subscription_id: str) -> str:
    """The subscription's tap exchange, bound to the public exchange with ``#``."""
    return f"{SUBSCRIPTION_RESOURCE_PREFIX}{subscription_id}"


def queue_prefix_of(subscription_id: str) -> str:
    """What the subscription's queue names start with."""
    return f"{tap_of(subscription_id)}."


def subject_of(subscription_id: str) -> str:
    """The CloudEvents subject (and audit resource) of a subscription's events."""
    return f"subscriptions/{subscription_id}"


def digest_of(password: str) -> str:
    """How a password is stored: its SHA-256, hex (the password is 256 random bits)."""
    return hashlib.sha256(password.encode()).hexdigest()


class SubscriptionService:
    """Create, list and delete subscriptions; answer the broker's questions about them."""

    def __init__(
        self,
        *,
        store: SubscriptionStore,
        taps: BrokerTaps,
        uow: UnitOfWork,
        vhost: str,
        enabled: bool = True,
        max_subscriptions: int = 100,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._taps = taps
        self._uow = uow
        self.vhost = vhost
        self._enabled = enabled
        self._max = max_subscriptions
        self._clock = clock

    # ---- the API ---------------------------------------------------------------------------

    async def create(
        self, *, description: str = "", context: RequestContext | None = None
    ) -> tuple[Subscription, str]:
        """A new subscription and its password, which is shown this once.

        Its tap is declared and bound first: a subscription that exists has its tap (a tap
        left by a failed commit has no queue and no user that could read it).
        """
        if not self._enabled:
            # 409, not 503: nothing is down, and retrying will not help until an operator
            # turns them on
            raise ServiceError(
                ErrorCode.CONFLICT,
                "AMQP subscriptions are off on this platform: the broker authorizer is not "
                "served (HYPERSDK_WEBHOOKS_BROKER_AUTH_PORT).",
            )
        if len(description) > MAX_DESCRIPTION:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, f"description: at most {MAX_DESCRIPTION} characters."
            )
        if await self._store.count_active() >= self._max:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"At most {self._max} AMQP subscriptions; delete one that is not needed.",
            )
        password = secrets.token_urlsafe(32)
        subscription = Subscription(
            id=f"sb_{secrets.token_hex(12)}",
            description=description,
            password_digest=digest_of(password),
            created_at=self._clock(),
        )
        await self._taps.open(subscription.id)
        async with self._uow.transaction():
            await self._store.add(subscription)
            await self._uow.record(
                SubscriptionCreated(subscription_id=subscription.id),
                subject=subject_of(subscription.id),
                context=context,
            )
        return subscription, password

    async def list(self) -> list[Subscription]:
        """Every subscription not deleted, oldest first."""
        return await self._store.list_active()

    async def get(self, subscription_id: str) -> Subscription:
        """One subscription, or not_found (a deleted one too)."""
        found = await self._store.get(subscription_id)
        if found is None or not found.active:
            raise ServiceError(ErrorCode.NOT_FOUND, "No AMQP subscription with that id.")
        return found

    async def delete(self, subscription_id: str, *, context: RequestContext | None = None) -> None:
        """Refuse its user from now on, then remove its tap and queues (or not_found)."""
        async with self._uow.transaction():
            if not await self._store.mark_deleted(subscription_id, now=self._clock()):
                raise ServiceError(ErrorCode.NOT_FOUND, "No AMQP subscription with that id.")
            await self._uow.record(
                SubscriptionDeleted(subscription_id=subscription_id),
                subject=subject_of(subscription_id),
                context=context,
            )
        try:
            await self._tear_down(subscription_id)
        except Exception:  # the periodic tear-down finishes it; the user is refused already
            logger.warning(
                "removing the broker objects of subscription %s failed; will retry",
                subscription_id,
                exc_info=True,
            )

    async def tear_down(self) -> int:
        """Finish every deletion whose broker objects are not removed yet; how many."""
        done = 0
        for subscription in await self._store.deleted():
            await self._tear_down(subscription.id)
            done += 1
        return done

    async def _tear_down(self, subscription_id: str) -> None:
        found = await self._store.get(subscription_id)
        if found is None:
            return
        await self._taps.close(subscription_id, queues=found.queues)
        await self._store.remove(subscription_id)

    # ---- the broker's questions ------------------------------------------------------------

    async def authenticate(self, username: str, password: str) -> bool:
        """Whether this is an active subscription's user and its password."""
        found = await self._active(username)
        if found is None or len(password) > MAX_PASSWORD_LENGTH:
            return False
        return hmac.compare_digest(found.password_digest, digest_of(password))

    async def may_enter(self, username: str, vhost: str) -> bool:
        """Only the subscribers' virtual host."""
        return vhost == self.vhost and await self._active(username) is not None

    async def may_use(
        self, username: str, *, vhost: str, resource: str, name: str, permission: str
    ) -> bool:
        """Its own queues (at most :data:`MAX_QUEUES` names) and reading its tap; no more."""
        if vhost != self.vhost:
            return False
        found = await self._active(username)
        if found is None:
            return False
        if resource == "exchange":
            return name == tap_of(found.id) and permission == "read"
        return resource == "queue" and await self._may_use_queue(found, name, permission)

    async def _may_use_queue(self, found: Subscription, name: str, permission: str) -> bool:
        prefix = queue_prefix_of(found.id)
        own = name.startswith(prefix) and QUEUE_SUFFIX.fullmatch(name[len(prefix) :]) is not None
        if not own or permission not in {"configure", "write", "read"}:
            return False
        if name in found.queues:
            return True
        # Declared through this check first (configure), so recorded before any other use.
        return permission == "configure" and await self._store.record_queue(
            found.id, name, limit=MAX_QUEUES
        )

    async def may_route(
        self, username: str, *, vhost: str, exchange: str, permission: str, routing_key: str
    ) -> bool:
        """Binding to its tap with any pattern (topic read); never publishing (topic write)."""
        if vhost != self.vhost or permission != "read":
            return False
        found = await self._active(username)
        return found is not None and exchange == tap_of(found.id)

    async def _active(self, username: str) -> Subscription | None:
        if not SUBSCRIPTION_ID.fullmatch(username):
            return None
        found = await self._store.get(username)
        return found if found is not None and found.active else None
