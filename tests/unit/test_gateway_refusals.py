"""Gateway: floods of failed authentications are throttled per address and summarised.

Over ASGI against the in-memory identity and policy (tests/unit/test_gateway_chain.py's world);
client addresses are chosen with X-Forwarded-For from a trusted proxy.
"""

from __future__ import annotations

import asyncio

from hypersdk_audit.core.recorder import entry_fields
from hypersdk_contracts.envelope import CloudEvent, RequestContext, new_event
from hypersdk_contracts.events import RefusalsSummarized
from hypersdk_contracts.names import RpcQueue
from hypersdk_gateway.core.limits import TokenBuckets
from tests.unit.test_gateway_chain import (
    PASSWORD,
    Gateway,
    GatewayFactory,
    assert_envelope,
    bearer,
)

ATTACKER = "203.0.113.7"
NEIGHBOUR = "198.51.100.20"
BOGUS = {"Authorization": "Bearer hsdk_s_" + "x" * 43}


def summaries_of(gateway: Gateway) -> list[CloudEvent]:
    return [e for e in gateway.events.events if e.routing_key == "gateway.refusals.summarized"]


def from_address(address: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Forwarded-For": address, **(headers or {})}


async def throttled_gateway(make_gateway: GatewayFactory, **overrides: object) -> Gateway:
    return await make_gateway(
        trusted_proxies=["127.0.0.1"],
        auth_failures_per_minute=3,
        refusal_summary_seconds=0.3,
        **overrides,
    )


async def test_an_address_that_keeps_failing_gets_429_before_identity_is_asked(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(trusted_proxies=["127.0.0.1"], auth_failures_per_minute=3)
    statuses = []
    for _ in range(10):
        response = await gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, BOGUS))
        statuses.append(response.status_code)

    assert statuses == [401] * 3 + [429] * 7
    assert gateway.backend.asked.count(RpcQueue.IDENTITY_AUTHENTICATE) == 3
    refused = await gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, BOGUS))
    assert_envelope(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-content-type-options"] == "nosniff"
    # Calls without any credential count as failures too, and are refused the same way.
    anonymous = await gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER))
    assert anonymous.status_code == 429


async def test_other_addresses_and_already_verified_credentials_are_not_throttled(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(trusted_proxies=["127.0.0.1"], auth_failures_per_minute=2)
    token = await gateway.login("alice")
    assert (
        await gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, bearer(token)))
    ).status_code == 200  # verified once: cached
    for _ in range(3):
        await gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, BOGUS))

    assert (
        await gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, BOGUS))
    ).status_code == 429
    assert (
        await gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, bearer(token)))
    ).status_code == 200
    assert (
        await gateway.client.get("/api/v1/vms", headers=from_address(NEIGHBOUR, BOGUS))
    ).status_code == 401
    login = await gateway.client.post(
        "/api/v1/auth/login",
        json={"username": "bob", "password": PASSWORD},
        headers=from_address(ATTACKER),
    )
    assert login.status_code == 200  # logins have their own limit and identity's throttling


async def test_a_flood_of_refusals_is_audited_as_one_summary_per_address(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await throttled_gateway(make_gateway)
    for address in (ATTACKER, NEIGHBOUR):
        for _ in range(40):
            await gateway.client.get("/api/v1/vms", headers=from_address(address, BOGUS))

    completed = gateway.completed()
    assert [e.data["status"] for e in completed] == [401] * 6  # 3 per address, then throttled
    await asyncio.sleep(0.5)  # the window closes
    summaries = summaries_of(gateway)
    assert sorted((e.source_ip, e.data["refused"]) for e in summaries) == [
        (NEIGHBOUR, 37),
        (ATTACKER, 37),
    ]
    for event in summaries:
        assert event.data["reason"] == "authentication_failures"
        assert event.actor is None
        assert event.data["window_started_at"] <= event.data["window_ended_at"]


async def test_anonymous_calls_over_their_rate_limit_are_summarised_too(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await throttled_gateway(make_gateway, login_rate_limit_per_minute=2)
    body = {"username": "alice", "password": "wrong password"}
    for _ in range(12):
        await gateway.client.post("/api/v1/auth/login", json=body, headers=from_address(ATTACKER))

    assert [e.data["status"] for e in gateway.completed()] == [401, 401]
    await asyncio.sleep(0.5)
    (summary,) = summaries_of(gateway)
    assert (summary.source_ip, summary.data["reason"], summary.data["refused"]) == (
        ATTACKER,
        "rate_limited",
        10,
    )


def test_a_summary_becomes_one_audit_entry_with_its_count_and_address() -> None:
    summary = RefusalsSummarized.model_validate(
        {
            "reason": "authentication_failures",
            "refused": 290,
            "window_started_at": "2026-12-01T10:00:00Z",
            "window_ended_at": "2026-12-01T10:01:00Z",
        }
    )
    event = new_event(
        service="gateway",
        routing_key=summary.routing_key.value,
        data=summary,
        subject="/api/v1",
        context=RequestContext(source_ip=ATTACKER),
    )

    fields = entry_fields(event)

    assert (fields.action, fields.result, fields.source_ip, fields.user) == (
        "api.throttle",
        "failure: authentication_failures (290 calls)",
        ATTACKER,
        None,
    )


def test_a_refunded_token_can_be_spent_again_but_never_beyond_capacity() -> None:
    buckets = TokenBuckets(capacity=2, period_seconds=60, clock=lambda: 0.0)
    buckets.take("a")
    buckets.take("a")
    assert not buckets.take("a").allowed
    buckets.refund("a")
    assert buckets.take("a").allowed
    buckets.refund("a")
    buckets.refund("a")
    buckets.refund("a")
    assert [buckets.take("a").allowed for _ in range(3)] == [True, True, False]


async def test_calls_arriving_together_reach_identity_no_more_than_the_bucket_allows(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await throttled_gateway(make_gateway)
    answers = await asyncio.gather(
        *(
            gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, BOGUS))
            for _ in range(20)
        )
    )
    then = await gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, BOGUS))

    # One question to identity for the twenty; each refusal counts against the address.
    assert sorted(a.status_code for a in answers) == [401] * 20
    assert gateway.backend.asked.count(RpcQueue.IDENTITY_AUTHENTICATE) <= 3
    assert then.status_code == 429
    await asyncio.sleep(0.5)  # the summary window ends
    counted = sum(e.data["refused"] for e in summaries_of(gateway))
    audited_401 = [e for e in gateway.completed() if e.data["status"] == 401]
    assert len(audited_401) + counted == 21  # every call audited once, most in the summary
    assert len(audited_401) <= 3


async def test_a_good_credential_arriving_in_a_crowd_is_never_throttled(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await throttled_gateway(make_gateway)
    token = await gateway.login("olga")  # not verified yet: the cache does not hold it

    answers = await asyncio.gather(
        *(
            gateway.client.get("/api/v1/vms", headers=from_address(ATTACKER, bearer(token)))
            for _ in range(20)
        )
    )

    assert [a.status_code for a in answers] == [200] * 20
    assert gateway.backend.asked.count(RpcQueue.IDENTITY_AUTHENTICATE) <= 3
