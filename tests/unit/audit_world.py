"""An audit service on the in-memory log, with a gateway key of its own, for unit tests.

Each service of the platform publishes as the broker login ``hsdk-<service>``; events built by
:func:`sealed` carry a request seal that names their own request, as the gateway signs it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_audit.adapters.outbound.memory import InMemoryAuditLog
from hypersdk_audit.core.service import AuditService
from hypersdk_contracts.catalogue import SERVICES
from hypersdk_contracts.envelope import CloudEvent
from hypersdk_kit.attribution import Attribution
from hypersdk_kit.bus import Received
from hypersdk_kit.trust import AssertionSigner, AssertionVerifier

GATEWAY_KEY = Ed25519PrivateKey.generate()
GATEWAY = AssertionSigner(GATEWAY_KEY, issuer="gateway")
PUBLISHERS = {f"hsdk-{service}": service for service in SERVICES}
RECEIVED_AT = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


def login_of(service: str) -> str:
    """The broker login a service publishes as."""
    return f"hsdk-{service}"


def attribution() -> Attribution:
    """Attribution with the test gateway's public key and every service's login."""
    return Attribution(
        publishers=PUBLISHERS,
        seals=AssertionVerifier(GATEWAY_KEY.public_key(), issuer="gateway"),
    )


def audit_service(log: InMemoryAuditLog) -> AuditService:
    """The audit use cases on ``log``, with a fixed receive time."""
    return AuditService(log=log, attribution=attribution(), clock=lambda: RECEIVED_AT)


def seal(
    *,
    request_id: str | None,
    source_ip: str | None = None,
    actor: str | None = None,
    signer: AssertionSigner = GATEWAY,
    **extra: Any,
) -> str:
    """A request seal as the gateway signs it."""
    claims = {
        "typ": "request",
        "rid": request_id,
        "ip": source_ip,
        "sub": actor,
        "op": "test.operation",
        "res": None,
    }
    return signer.sign({**claims, **extra})


def sealed(event: CloudEvent) -> CloudEvent:
    """``event`` with the seal of the request it names (unchanged if it names none)."""
    if event.actor is None and event.source_ip is None and event.request_id is None:
        return event
    token = seal(request_id=event.request_id, source_ip=event.source_ip, actor=event.actor)
    return event.model_copy(update={"seal": token})


def received(event: CloudEvent, login: str | None = "") -> Received:
    """``event`` as delivered; by default published under its source service's login."""
    if login == "":
        login = login_of(event.source.rsplit("/", 1)[-1])
    return Received(event, login)
