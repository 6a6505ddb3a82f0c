"""Who really produced an event: the broker login, the event catalogue and the request seal.

An event is genuine when all of these hold (decision 0029):

1. it was published with an AMQP ``user_id`` (which RabbitMQ checks against the publishing
   connection's login) that the settings map to a service;
2. the catalogue lets that service emit its routing key, and its ``source`` names that service;
3. whatever it says about a request (actor, source IP, request ID) is backed by the gateway's
   request seal for that request: the seal verifies with the gateway's public key and names the
   same request ID, and the same actor and source IP where the event names them. The gateway's
   own events need no seal (it is the authority on its requests); an event that names none of
   the three needs none. Identity, the authority on principals, may name the actor where the
   seal names none (the user who just logged in) or where there is no request at all;
4. its id does not start with a prefix another service reserved (audit's quarantine records).

Audit checks it before it chains an event as genuine; webhooks before it delivers one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator

from hypersdk_contracts.catalogue import (
    PRINCIPAL_AUTHORITY,
    RESERVED_IDS,
    SERVICES,
    emitter_of,
    source_of,
)
from hypersdk_contracts.envelope import CloudEvent
from hypersdk_contracts.names import EVENT_TYPE_PREFIX
from hypersdk_kit.trust import AssertionRejectedError, AssertionVerifier

SEALS_REMEMBERED = 4096
"""Seals whose claims are kept after a check: one request's events often share one."""
GATEWAY = "gateway"


class NotGenuineError(Exception):
    """The event cannot be attributed as it claims; ``reason`` is a stable code."""

    def __init__(self, reason: str, *, producer: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.producer = producer


@dataclass(frozen=True)
class Attribution:
    """Attributes events to the services that really published them."""

    publishers: Mapping[str, str]
    """Broker login -> service."""
    seals: AssertionVerifier
    """The gateway's public key, issuer ``gateway``."""
    reserved_ids: Mapping[str, str] = field(default_factory=lambda: dict(RESERVED_IDS))
    """Event id prefix -> the only service whose events may carry such an id."""
    _verified: OrderedDict[str, dict[str, Any]] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )

    def producer_of(self, event: CloudEvent, *, login: str | None) -> str:
        """The service that published ``event``, or :class:`NotGenuineError`."""
        if login is None:
            raise NotGenuineError("no_login", producer=None)
        producer = self.publishers.get(login)
        if producer is None:
            raise NotGenuineError("unknown_login", producer=None)
        known = event.type.startswith(EVENT_TYPE_PREFIX)
        emitter = emitter_of(event.routing_key) if known else None
        if emitter is None:
            raise NotGenuineError("unknown_type", producer=producer)
        if emitter != producer:
            raise NotGenuineError("wrong_producer", producer=producer)
        if event.source != source_of(producer):
            raise NotGenuineError("wrong_source", producer=producer)
        for prefix, owner in self.reserved_ids.items():
            if event.id.startswith(prefix) and producer != owner:
                raise NotGenuineError("reserved_id", producer=producer)
        self._check_request_claims(event, producer)
        return producer

    def _check_request_claims(self, event: CloudEvent, producer: str) -> None:
        if producer == GATEWAY:
            return
        if event.actor is None and event.source_ip is None and event.request_id is None:
            return
        if event.seal is None:
            outside_any_request = event.source_ip is None and event.request_id is None
            if producer == PRINCIPAL_AUTHORITY and outside_any_request:
                return
            raise NotGenuineError("missing_seal", producer=producer)
        claims = self._claims_of(event.seal, producer=producer)
        if claims.get("rid") is None or event.request_id != claims.get("rid"):
            raise NotGenuineError("seal_mismatch", producer=producer)
        if event.source_ip is not None and event.source_ip != claims.get("ip"):
            raise NotGenuineError("seal_mismatch", producer=producer)
        sub = claims.get("sub")
        # Identity names who logged in on an anonymous call: it is the authority on that.
        named_by_authority = producer == PRINCIPAL_AUTHORITY and sub is None
        if event.actor is not None and event.actor != sub and not named_by_authority:
            raise NotGenuineError("seal_mismatch", producer=producer)

    def _claims_of(self, seal: str, *, producer: str) -> dict[str, Any]:
        """The claims of a valid request seal (a verified one is remembered: same answer)."""
        claims = self._verified.get(seal)
        if claims is not None:
            self._verified.move_to_end(seal)
            return claims
        try:
            claims = self.seals.verify(seal, check_expiry=False)
        except AssertionRejectedError:
            raise NotGenuineError("invalid_seal", producer=producer) from None
        if claims.get("typ") != "request":
            raise NotGenuineError("invalid_seal", producer=producer)
        self._verified[seal] = claims
        if len(self._verified) > SEALS_REMEMBERED:
            self._verified.popitem(last=False)
        return claims


class PublisherSettings(BaseModel):
    """Who publishes as which service: a mixin of the settings of a service that attributes."""

    publishers: dict[str, str] = Field(
        default_factory=dict,
        description="Broker login -> service (JSON object): who really published each event. "
        "Events from a login not listed here are not genuine; the service's own login is "
        "implied.",
    )

    @field_validator("publishers")
    @classmethod
    def _known_services(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - set(SERVICES))
        if unknown:
            raise ValueError(f"not services of the platform: {unknown}")
        return value

    def attribution(self, *, service: str, amqp_url: str, seals: AssertionVerifier) -> Attribution:
        """The attribution of the platform's events, ``service``'s own (its login's) included."""
        return Attribution(publishers={**self.publishers, login_of(amqp_url): service}, seals=seals)


def login_of(amqp_url: str) -> str:
    """The broker login in an AMQP URL (RabbitMQ's default, guest, when it names none)."""
    return unquote(urlsplit(amqp_url).username or "guest")
