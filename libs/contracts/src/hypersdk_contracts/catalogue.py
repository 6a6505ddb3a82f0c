"""The event catalogue: which service may emit which event.

A service may emit only routing keys that start with its own name and that the contracts
define (:data:`hypersdk_contracts.events.EVENT_TYPES`), in envelopes whose ``source`` names it.
The audit service checks every event against this catalogue and the publisher's broker login.
"""

from __future__ import annotations

from hypersdk_contracts.events import EVENT_TYPES

SERVICES = ("gateway", "identity", "policy", "secrets", "exporter", "audit", "webhooks")
"""Every service of the platform."""

QUARANTINE_ID_PREFIX = "q-"
"""Ids of the events audit chains for quarantined ones: only audit may use the prefix."""
RESERVED_IDS = {QUARANTINE_ID_PREFIX: "audit"}
"""Event id prefix -> the one service whose events may carry such an id."""

PRINCIPAL_AUTHORITY = "identity"
"""The service that establishes who a principal is (it authenticates and signs assertions).

It may name the actor of its own events where the gateway's request seal names none: the user
who just logged in on an anonymous login call, or an actor of its own outside any request.
"""

EMITTERS: dict[str, str] = {
    routing_key: routing_key.split(".", 1)[0]
    for routing_key in EVENT_TYPES
    if routing_key.split(".", 1)[0] in SERVICES
}
"""The one service allowed to emit each routing key."""


def emitter_of(routing_key: str) -> str | None:
    """The service allowed to emit ``routing_key``; None for a key the catalogue lacks."""
    return EMITTERS.get(routing_key)


def source_of(service: str) -> str:
    """The CloudEvents ``source`` of the events ``service`` emits."""
    return f"/hypersdk/{service}"
