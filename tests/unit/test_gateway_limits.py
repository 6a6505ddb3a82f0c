"""Gateway: rate and body-size limits configured per endpoint, on top of the defaults.

The chain is built exactly as in test_gateway_chain.py (its fixture and helpers are reused):
real identity and policy use cases on in-memory stores, no RabbitMQ.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.core.limits import longest_prefix
from tests.unit.fake_backend import UNUSED_KEY
from tests.unit.test_gateway_chain import (
    EXPORT_BODY,
    GatewayFactory,
    assert_envelope,
    bearer,
)

PROVIDER_BODY = {"name": "lab", "type": "local", "config": {"directory": "lab"}}


def padded(body: dict[str, object], size: int) -> bytes:
    """``body`` as JSON, padded with trailing whitespace (still valid JSON) to ``size`` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


# ---- the settings -----------------------------------------------------------------------------


def test_the_defaults_are_the_documented_ones() -> None:
    settings = GatewaySettings(amqp_url="amqp://unused", signing_key_file=UNUSED_KEY)

    assert settings.rate_limit_per_minute == 600
    assert settings.login_rate_limit_per_minute == 10
    assert settings.max_body_bytes == 1_000_000
    assert settings.max_export_body_bytes == 10_000_000
    assert settings.rate_limits == {}
    assert settings.body_limits == {}


def test_per_endpoint_limits_are_read_from_json_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYPERSDK_GATEWAY_AMQP_URL", "amqp://unused")
    monkeypatch.setenv("HYPERSDK_GATEWAY_SIGNING_KEY_FILE", str(UNUSED_KEY))
    monkeypatch.setenv("HYPERSDK_GATEWAY_RATE_LIMITS", '{"/api/v1/exports": 60}')
    monkeypatch.setenv("HYPERSDK_GATEWAY_BODY_LIMITS", '{"/api/v1/secrets": 20000}')

    settings = GatewaySettings()

    assert settings.rate_limits == {"/api/v1/exports": 60}
    assert settings.body_limits == {"/api/v1/secrets": 20000}


@pytest.mark.parametrize(
    "limits",
    [
        {"api/v1/exports": 60},  # not a path
        {"/api/v1/exports/": 60},  # a trailing slash would never match by segments
        {"/": 60},  # that is the default setting
        {"/api/v1/exports": 0},
        {"/api/v1/exports": -5},
    ],
)
@pytest.mark.parametrize("setting", ["rate_limits", "body_limits"])
def test_malformed_per_endpoint_limits_are_refused_at_start(
    setting: str, limits: dict[str, int]
) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(amqp_url="amqp://unused", signing_key_file=UNUSED_KEY, **{setting: limits})


def test_the_longest_prefix_wins_and_matches_whole_segments() -> None:
    prefixes = ["/api/v1/vms", "/api/v1/vms/lab", "/api/v1/auth/login"]

    assert longest_prefix("/api/v1/vms", prefixes) == "/api/v1/vms"
    assert longest_prefix("/api/v1/vms/other/web-1", prefixes) == "/api/v1/vms"
    assert longest_prefix("/api/v1/vms/lab/web-1", prefixes) == "/api/v1/vms/lab"
    assert longest_prefix("/api/v1/vmsx", prefixes) is None
    assert longest_prefix("/api/v1/vms/labx", prefixes) == "/api/v1/vms"
    assert longest_prefix("/api/v1/jobs", prefixes) is None


# ---- rate limits --------------------------------------------------------------------------------


async def test_a_configured_endpoint_has_its_own_budget_per_principal(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(rate_limits={"/api/v1/exports": 2})
    olga = await gateway.login("olga")
    root = await gateway.login("root")

    exports = [
        await gateway.client.post("/api/v1/exports", json=EXPORT_BODY, headers=bearer(olga))
        for _ in range(3)
    ]
    other_route = await gateway.client.get("/api/v1/vms", headers=bearer(olga))
    other_principal = await gateway.client.post(
        "/api/v1/exports", json=EXPORT_BODY, headers=bearer(root)
    )

    assert [r.status_code for r in exports[:2]] == [202, 202]
    assert exports[0].headers["ratelimit-policy"] == "2;w=60"
    assert_envelope(exports[2], 429, "rate_limited")
    assert int(exports[2].headers["retry-after"]) >= 1
    assert exports[2].headers["ratelimit-policy"] == "2;w=60"
    # The default group (600 per minute) is untouched by the export calls ...
    assert other_route.status_code == 200
    assert other_route.headers["ratelimit-policy"] == "600;w=60"
    # ... and another principal has a budget of their own.
    assert other_principal.status_code == 202


async def test_the_longest_configured_prefix_decides_the_budget(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(rate_limits={"/api/v1/vms": 3, "/api/v1/vms/lab": 1})
    token = await gateway.login("alice")

    lab = [await gateway.client.get("/api/v1/vms/lab/web-1", headers=bearer(token)) for _ in "ab"]
    vms = [await gateway.client.get("/api/v1/vms", headers=bearer(token)) for _ in "abcd"]
    elsewhere = await gateway.client.get("/api/v1/jobs", headers=bearer(token))

    assert lab[0].status_code == 404  # the fake exporter knows no VMs; the call was let through
    assert lab[0].headers["ratelimit-policy"] == "1;w=60"
    assert_envelope(lab[1], 429, "rate_limited")
    assert [r.status_code for r in vms] == [200, 200, 200, 429]
    assert vms[0].headers["ratelimit-policy"] == "3;w=60"
    assert elsewhere.status_code == 200
    assert elsewhere.headers["ratelimit-policy"] == "600;w=60"


async def test_a_configured_login_limit_overrides_the_login_default(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(rate_limits={"/api/v1/auth/login": 1})
    body = {"username": "alice", "password": "correct horse battery staple"}

    first = await gateway.client.post("/api/v1/auth/login", json=body)
    second = await gateway.client.post("/api/v1/auth/login", json=body)

    assert first.status_code == 200
    assert first.headers["ratelimit-policy"] == "1;w=60"
    assert_envelope(second, 429, "rate_limited")


async def test_anonymous_calls_count_per_client_address(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(
        rate_limits={"/api/v1/openapi.json": 2}, trusted_proxies=["127.0.0.1"]
    )
    path = "/api/v1/openapi.json"
    far = {"X-Forwarded-For": "203.0.113.7"}

    local = [await gateway.client.get(path) for _ in range(3)]
    remote = await gateway.client.get(path, headers=far)

    assert [r.status_code for r in local] == [200, 200, 429]
    assert remote.status_code == 200
    assert "remaining=1" in remote.headers["ratelimit"]


# ---- body limits --------------------------------------------------------------------------------


async def test_a_configured_endpoint_has_its_own_body_limit(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_body_bytes=100, body_limits={"/api/v1/providers": 300})
    token = await gateway.login("olga")
    headers = {"Content-Type": "application/json", **bearer(token)}

    within = await gateway.client.post(
        "/api/v1/providers", content=padded(PROVIDER_BODY, 250), headers=headers
    )
    over = await gateway.client.post(
        "/api/v1/providers", content=padded(PROVIDER_BODY, 301), headers=headers
    )
    elsewhere = await gateway.client.put(
        "/api/v1/secrets/providers/lab",
        content=padded({"data": {"k": "v"}}, 250),
        headers=headers,
    )

    # Past the size layer: the fake backend has no exporter queue to register with (503).
    assert within.status_code != 413, within.text
    error = assert_envelope(over, 413, "payload_too_large")
    assert "300" in error["message"]
    assert_envelope(elsewhere, 413, "payload_too_large")  # the 100-byte default


async def test_the_export_default_stays_unless_overridden(make_gateway: GatewayFactory) -> None:
    default = await make_gateway(max_body_bytes=100, body_limits={"/api/v1/providers": 300})
    overridden = await make_gateway(max_body_bytes=100, body_limits={"/api/v1/exports": 60})
    body = padded(EXPORT_BODY, 1000)

    responses = []
    for gateway in (default, overridden):
        token = await gateway.login("olga")
        headers = {"Content-Type": "application/json", **bearer(token)}
        responses.append(
            await gateway.client.post("/api/v1/exports", content=body, headers=headers)
        )

    assert responses[0].status_code == 202, responses[0].text  # 10 MB for exports by default
    error = assert_envelope(responses[1], 413, "payload_too_large")
    assert "60" in error["message"]
