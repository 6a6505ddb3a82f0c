"""Audit attributes each event to the service that really published it, or quarantines it.

The producer is the broker-validated login (AMQP ``user_id``) mapped to a service; the catalogue
says which service may emit which routing key; actor, address and request ID need the
gateway's request seal. Anything else is kept in the quarantine, never chained as genuine, and
an ``audit.event.quarantined`` entry of audit's own is chained instead.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_audit.adapters.outbound.memory import InMemoryAuditLog
from hypersdk_audit.core.quarantine import REDACTED, quarantine_record
from hypersdk_contracts.catalogue import EMITTERS, emitter_of, source_of
from hypersdk_contracts.envelope import CloudEvent, RequestContext, new_event
from hypersdk_contracts.events import (
    EVENT_TYPES,
    EventData,
    JobStarted,
    LoginSucceeded,
    RequestCompleted,
    SessionCreated,
    UserCreated,
)
from hypersdk_kit.attribution import Attribution, NotGenuineError
from hypersdk_kit.trust import AssertionSigner, AssertionVerifier

from .audit_world import (
    GATEWAY_KEY,
    PUBLISHERS,
    RECEIVED_AT,
    audit_service,
    login_of,
    received,
    seal,
    sealed,
)

ADMIN_CALL = RequestContext(actor="admin", source_ip="203.0.113.7", request_id="req-admin")
ALICE_CALL = RequestContext(actor="alice", source_ip="198.51.100.4", request_id="req-alice")
LOGIN_CALL = RequestContext(source_ip="198.51.100.4", request_id="req-login")


def _event(
    data: EventData,
    *,
    service: str | None = None,
    context: RequestContext | None = None,
    subject: str | None = None,
) -> CloudEvent:
    return new_event(
        service=service or data.routing_key.value.split(".", 1)[0],
        routing_key=data.routing_key.value,
        data=data,
        subject=subject,
        context=context,
    )


def _forged_request_completed() -> CloudEvent:
    """What was reproduced: a made-up admin API call, at a chosen time and address."""
    event = _event(
        RequestCompleted(
            method="DELETE", route="/api/v1/users/{username}", status=204, duration_ms=1
        ),
        context=ADMIN_CALL,
    )
    return event.model_copy(update={"time": datetime(2026, 1, 1, 3, 0, tzinfo=UTC)})


async def _record(event: CloudEvent, login: str | None = "") -> InMemoryAuditLog:
    log = InMemoryAuditLog()
    await audit_service(log).record_batch([received(event, login)])
    return log


def _quarantined(log: InMemoryAuditLog, event: CloudEvent, reason: str) -> None:
    """``event`` was kept in quarantine for ``reason`` and only audit's own entry was chained."""
    (record,) = log.quarantine
    assert (record.event_id, record.reason) == (event.id, reason)
    (entry,) = log.entries
    assert entry.event_id == record.id != event.id
    assert (entry.action, entry.result) == ("audit.quarantine", f"failure: {reason}")
    assert (entry.producer, entry.user, entry.source_ip, entry.request_id) == (
        "audit",
        None,
        None,
        None,
    )
    assert entry.resource == f"event/{event.id}"
    assert entry.timestamp == entry.received_at == RECEIVED_AT


# ---- the catalogue ----------------------------------------------------------------------------


def test_every_event_type_has_exactly_the_service_it_is_named_after_as_emitter() -> None:
    assert set(EMITTERS) == set(EVENT_TYPES)
    assert emitter_of("gateway.request.completed") == "gateway"
    assert emitter_of("audit.event.quarantined") == "audit"
    assert emitter_of("billing.invoice.sent") is None
    assert emitter_of("identity.user.exploded") is None


def test_the_catalogue_source_is_the_one_envelopes_carry() -> None:
    event = _event(UserCreated(username="bob"))
    assert event.source == source_of("identity")


# ---- refused --------------------------------------------------------------------------------


async def test_a_forged_gateway_request_from_another_login_is_quarantined_not_chained() -> None:
    forged = _forged_request_completed()

    log = await _record(forged, login_of("exporter"))

    _quarantined(log, forged, "wrong_producer")
    (record,) = log.quarantine
    assert (record.login, record.producer) == ("hsdk-exporter", "exporter")
    assert (record.claimed_type, record.claimed_source) == (forged.type, "/hypersdk/gateway")
    assert record.claimed_actor == "admin"
    assert record.received_at == RECEIVED_AT
    assert record.envelope["sourceip"] == "203.0.113.7"  # kept as evidence, never chained
    assert all(entry.user != "admin" for entry in log.entries)


async def test_an_event_type_outside_the_catalogue_is_quarantined() -> None:
    unknown = CloudEvent(
        id="e-new",
        source="/hypersdk/exporter",
        type="io.hypersdk.exporter.invoice.sent",
        time=datetime(2025, 5, 1, 8, 0, tzinfo=UTC),
        data={"anything": ["goes", 1]},
    )

    _quarantined(await _record(unknown), unknown, "unknown_type")


async def test_a_type_without_the_platform_prefix_is_quarantined() -> None:
    event = _event(JobStarted(job_id="j-1"))
    foreign = event.model_copy(update={"type": "com.example.exporter.job.started"})

    _quarantined(await _record(foreign), foreign, "unknown_type")


@pytest.mark.parametrize(("login", "reason"), [(None, "no_login"), ("mallory", "unknown_login")])
async def test_an_event_from_no_login_or_an_unmapped_one_is_quarantined(
    login: str | None, reason: str
) -> None:
    event = _event(JobStarted(job_id="j-1"))

    log = await _record(event, login)

    _quarantined(log, event, reason)
    assert (log.quarantine[0].login, log.quarantine[0].producer) == (login, None)


async def test_a_source_that_is_not_the_publishing_service_is_quarantined() -> None:
    event = _event(JobStarted(job_id="j-1")).model_copy(update={"source": "/hypersdk/gateway"})

    _quarantined(await _record(event, login_of("exporter")), event, "wrong_source")


async def test_an_actor_without_a_seal_is_quarantined() -> None:
    forged = _event(JobStarted(job_id="j-1"), context=ADMIN_CALL)

    _quarantined(await _record(forged), forged, "missing_seal")


@pytest.mark.parametrize("field", ["actor", "source_ip", "request_id"])
async def test_each_request_claim_alone_needs_a_seal(field: str) -> None:
    claims = {field: ADMIN_CALL.model_dump()[field]}
    forged = _event(JobStarted(job_id="j-1"), context=RequestContext(**claims))

    _quarantined(await _record(forged), forged, "missing_seal")


async def test_outside_any_request_only_identity_may_name_an_actor() -> None:
    forged = _event(JobStarted(job_id="j-1"), context=RequestContext(actor="admin"))

    _quarantined(await _record(forged), forged, "missing_seal")


@pytest.mark.parametrize(
    "other",
    [
        {"request_id": "req-other"},
        {"actor": "alice"},
        {"source_ip": "192.0.2.1"},
    ],
)
async def test_a_seal_of_another_request_is_quarantined(other: dict[str, str]) -> None:
    event = _event(JobStarted(job_id="j-1"), context=ADMIN_CALL)
    claims = {**ADMIN_CALL.model_dump(include={"actor", "source_ip", "request_id"}), **other}
    forged = event.model_copy(update={"seal": seal(**claims)})

    _quarantined(await _record(forged), forged, "seal_mismatch")


async def test_a_seal_naming_no_request_is_quarantined() -> None:
    event = _event(JobStarted(job_id="j-1"), context=RequestContext(actor="admin"))
    forged = event.model_copy(update={"seal": seal(request_id=None, actor="admin")})

    _quarantined(await _record(forged), forged, "seal_mismatch")


@pytest.mark.parametrize(
    "token",
    [
        seal(
            request_id="req-admin",
            actor="admin",
            source_ip="203.0.113.7",
            signer=AssertionSigner(Ed25519PrivateKey.generate(), issuer="gateway"),
        ),
        seal(request_id="req-admin", actor="admin", source_ip="203.0.113.7", typ="grant"),
        "v1.not-a.seal",
    ],
    ids=["signed-by-another-key", "not-a-request-seal", "malformed"],
)
async def test_a_seal_that_does_not_verify_is_quarantined(token: str) -> None:
    forged = _event(JobStarted(job_id="j-1"), context=ADMIN_CALL).model_copy(update={"seal": token})

    _quarantined(await _record(forged), forged, "invalid_seal")


async def test_identity_may_not_name_another_actor_than_an_authenticated_seal_does() -> None:
    event = _event(UserCreated(username="eve"), context=ALICE_CALL)
    forged = event.model_copy(
        update={"actor": "admin", "seal": seal(request_id="req-alice", actor="alice")}
    )

    _quarantined(await _record(forged), forged, "seal_mismatch")


async def test_no_genuine_event_can_take_the_id_a_forgerys_report_will_have() -> None:
    forged = _forged_request_completed()
    exporter = login_of("exporter")
    predicted = quarantine_record(
        forged, login=exporter, producer="exporter", reason="", received_at=RECEIVED_AT
    ).id
    squatter = _event(JobStarted(job_id="j-1")).model_copy(update={"id": predicted})
    log = InMemoryAuditLog()
    audit = audit_service(log)

    await audit.record_batch([received(squatter, exporter)])
    await audit.record_batch([received(forged, exporter)])

    assert [(r.event_id, r.reason) for r in log.quarantine] == [
        (predicted, "reserved_id"),
        (forged.id, "wrong_producer"),
    ]
    assert [e.event_id for e in log.entries] == [r.id for r in log.quarantine]
    assert predicted in {e.event_id for e in log.entries}  # the forgery's report, not the squat


async def test_a_redelivered_forgery_is_kept_and_reported_once() -> None:
    forged = _forged_request_completed()
    log = InMemoryAuditLog()
    audit = audit_service(log)

    await audit.record_batch([received(forged, login_of("exporter"))])
    await audit.record_batch([received(forged, login_of("exporter"))] * 2)

    assert len(log.quarantine) == 1
    assert len(log.entries) == 1


async def test_secret_looking_fields_of_a_refused_envelope_are_redacted() -> None:
    forged = CloudEvent(
        id="e-secret",
        source="/hypersdk/exporter",
        type="io.hypersdk.exporter.secret.leaked",
        time=datetime(2025, 5, 1, tzinfo=UTC),
        data={
            "password": "hunter2hunter2",
            "nested": [{"api_key": "k-123456"}, {"note": "token=abcdef123456"}],
            "harmless": "kept",
        },
        seal=seal(request_id="r"),
    )

    (record,) = (await _record(forged)).quarantine

    data = record.envelope["data"]
    assert data["password"] == REDACTED
    assert data["nested"][0]["api_key"] == REDACTED
    assert "abcdef123456" not in data["nested"][1]["note"]
    assert data["harmless"] == "kept"
    assert record.envelope["seal"] == REDACTED
    assert "hunter2" not in repr(record)


async def test_a_huge_refused_envelope_is_kept_without_its_data() -> None:
    forged = CloudEvent(
        id="e-huge",
        source="/hypersdk/exporter",
        type="io.hypersdk.exporter.blob.sent",
        time=datetime(2025, 5, 1, tzinfo=UTC),
        data={"blob": "x" * 200_000},
    )

    (record,) = (await _record(forged)).quarantine

    assert record.envelope["id"] == "e-huge"
    assert record.envelope["data"] == {"truncated_bytes": pytest.approx(200_000, rel=0.01)}


# ---- genuine ----------------------------------------------------------------------------------


async def test_a_sealed_event_from_its_emitter_is_chained_with_producer_and_receive_time() -> None:
    event = sealed(_event(JobStarted(job_id="j-1"), context=ADMIN_CALL, subject="job/j-1"))

    log = await _record(event)

    assert log.quarantine == []
    (entry,) = log.entries
    assert entry.event_id == event.id
    assert (entry.user, entry.source_ip, entry.request_id) == ("admin", "203.0.113.7", "req-admin")
    assert (entry.producer, entry.received_at) == ("exporter", RECEIVED_AT)
    assert entry.timestamp == event.time  # the producer's clock, beside audit's


async def test_a_seal_long_expired_still_backs_the_event_of_a_job_that_ran_late() -> None:
    day_old = AssertionSigner(GATEWAY_KEY, issuer="gateway", clock=lambda: time.time() - 86400)
    event = _event(JobStarted(job_id="j-1"), context=ADMIN_CALL)
    late = event.model_copy(
        update={
            "seal": seal(
                request_id="req-admin", actor="admin", source_ip="203.0.113.7", signer=day_old
            )
        }
    )

    log = await _record(late)

    assert [entry.event_id for entry in log.entries] == [late.id]


async def test_the_gateway_needs_no_seal_for_its_own_requests() -> None:
    event = _forged_request_completed()  # the same envelope, but from the gateway's login

    log = await _record(event, login_of("gateway"))

    assert log.quarantine == []
    assert [(e.user, e.producer) for e in log.entries] == [("admin", "gateway")]


async def test_an_event_naming_no_request_needs_no_seal() -> None:
    event = _event(JobStarted(job_id="j-1"))

    log = await _record(event)

    assert [(e.user, e.producer) for e in log.entries] == [(None, "exporter")]


async def test_identity_names_who_logged_in_on_an_anonymous_call() -> None:
    logged_in = LOGIN_CALL.model_copy(update={"actor": "alice"})
    events = [
        _event(LoginSucceeded(username="alice", method="local"), context=logged_in),
        _event(
            SessionCreated(
                session_id="s-1", username="alice", expires_at=datetime(2027, 1, 1, tzinfo=UTC)
            ),
            context=logged_in,
        ),
    ]
    anonymous_seal = seal(request_id="req-login", source_ip="198.51.100.4")
    log = InMemoryAuditLog()

    await audit_service(log).record_batch(
        [received(e.model_copy(update={"seal": anonymous_seal})) for e in events]
    )

    assert log.quarantine == []
    assert [(e.user, e.producer) for e in log.entries] == [("alice", "identity")] * 2


async def test_identity_names_an_actor_of_its_own_outside_any_request() -> None:
    event = _event(UserCreated(username="admin"), context=RequestContext(actor="bootstrap"))

    log = await _record(event)

    assert [(e.user, e.producer) for e in log.entries] == [("bootstrap", "identity")]


class CountingVerifier(AssertionVerifier):
    """The gateway's verifier, counting signature checks."""

    checks = 0

    def verify(self, token: str | None, *, check_expiry: bool = True) -> dict[str, Any]:
        CountingVerifier.checks += 1
        return super().verify(token, check_expiry=check_expiry)


async def test_the_events_of_one_request_cost_one_signature_check() -> None:
    verifier = CountingVerifier(GATEWAY_KEY.public_key(), issuer="gateway")
    attribution = Attribution(publishers=PUBLISHERS, seals=verifier)
    token = seal(request_id="req-admin", actor="admin", source_ip="203.0.113.7")
    events = [
        _event(JobStarted(job_id=f"j-{n}"), context=ADMIN_CALL).model_copy(update={"seal": token})
        for n in range(3)
    ]
    forged = events[0].model_copy(update={"actor": "alice"})

    assert [attribution.producer_of(e, login="hsdk-exporter") for e in events] == ["exporter"] * 3
    with pytest.raises(NotGenuineError, match="seal_mismatch"):
        attribution.producer_of(forged, login="hsdk-exporter")  # remembered claims, same checks
    assert CountingVerifier.checks == 1


async def test_a_batch_keeps_its_order_with_forgeries_replaced_by_audits_own_entries() -> None:
    good = sealed(_event(JobStarted(job_id="j-1"), context=ADMIN_CALL))
    forged = _forged_request_completed()
    later = _event(JobStarted(job_id="j-2"))
    log = InMemoryAuditLog()
    audit = audit_service(log)

    await audit.record_batch(
        [received(good), received(forged, login_of("exporter")), received(later)]
    )

    assert [e.producer for e in log.entries] == ["exporter", "audit", "exporter"]
    assert [e.event_id for e in log.entries][::2] == [good.id, later.id]
    assert (await audit.verify()).valid
    page = await audit.quarantine(after_number=0, limit=10)
    assert [(r.number, r.event_id) for r in page] == [(1, forged.id)]
    assert await audit.quarantine(after_number=1, limit=10) == []
