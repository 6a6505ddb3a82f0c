"""Bad input gets a stable 4xx, never a 500: unstorable text and numbers, wrong methods.

The contracts refuse what no store can hold in every field of every message; the gateway
answers such input with 422 in the error envelope, 405 with ``Allow``, 401 with its challenge.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.rpc import (
    ListAuditEventsRequest,
    LoginRequest,
    PutSecretRequest,
    RegisterProviderRequest,
)
from tests.unit.test_gateway_chain import Gateway, GatewayFactory, assert_envelope, bearer

LONE_SURROGATE = "\ud800"
CONTEXT = RequestContext(request_id="bad-input-1")


@pytest.mark.parametrize(
    "build",
    [
        lambda: PutSecretRequest(path="lab/x", data={"k": LONE_SURROGATE}, context=CONTEXT),
        lambda: PutSecretRequest(path="lab/x", data={"k\udfff": "v"}, context=CONTEXT),
        lambda: PutSecretRequest(path="lab/x", data={"k": "a\x00b"}, context=CONTEXT),
        lambda: RegisterProviderRequest(
            name="lab", type="local", config={"root": LONE_SURROGATE}, context=CONTEXT
        ),
        lambda: LoginRequest(username="a", password="p" + LONE_SURROGATE, context=CONTEXT),
        lambda: ListAuditEventsRequest(after_sequence=99999999999999999999, context=CONTEXT),
        lambda: ListAuditEventsRequest(after_sequence=2**63, context=CONTEXT),
        lambda: RequestContext(request_id="r" + LONE_SURROGATE),
    ],
    ids=[
        "surrogate-value",
        "surrogate-key",
        "nul",
        "provider-config",
        "password",
        "huge-int",
        "int64-plus-one",
        "context",
    ],
)
def test_every_message_refuses_what_no_store_can_hold(build: object) -> None:
    with pytest.raises(ValidationError):
        build()  # type: ignore[operator]


def test_the_largest_64_bit_integer_and_ordinary_text_are_fine() -> None:
    request = ListAuditEventsRequest(after_sequence=2**63 - 1, context=CONTEXT)
    assert request.after_sequence == 2**63 - 1
    secret = PutSecretRequest(path="lab/x", data={"k": "zażółć 😀"}, context=CONTEXT)
    assert secret.data["k"] == "zażółć 😀"


async def admin(gateway: Gateway) -> dict[str, str]:
    return bearer(await gateway.login("root"))


@pytest.mark.parametrize(
    ("method", "path", "raw_body"),
    [
        ("PUT", "/api/v1/secrets/lab/x", b'{"data": {"k": "\\ud800"}}'),
        ("PUT", "/api/v1/secrets/lab/x", b'{"data": {"\\udc00": "v"}}'),
        (
            "POST",
            "/api/v1/providers",
            b'{"name": "lab", "type": "local", "config": {"r": "\\ud800"}}',
        ),
        ("POST", "/api/v1/users", b'{"username": "carol", "password": "x\\udfffy"}'),
    ],
)
async def test_a_lone_surrogate_in_a_body_gets_422_and_reaches_no_service(
    make_gateway: GatewayFactory, method: str, path: str, raw_body: bytes
) -> None:
    gateway = await make_gateway()
    headers = {**await admin(gateway), "content-type": "application/json"}
    asked_before = len(gateway.backend.asked)

    response = await gateway.client.request(method, path, content=raw_body, headers=headers)

    assert_envelope(response, 422, "validation_failed")
    # Authenticated and authorized, then refused before any service was asked to act.
    assert set(gateway.backend.asked[asked_before:]) <= {
        "identity.rpc.authenticate",
        "policy.rpc.decide",
    }


@pytest.mark.parametrize(
    "query",
    [
        "after_sequence=99999999999999999999",
        "after_sequence=9223372036854775808",
        "after_sequence=-1",
        "limit=0",
        "limit=1001",
        "limit=99999999999999999999",
    ],
)
async def test_out_of_range_integers_in_the_query_get_422(
    make_gateway: GatewayFactory, query: str
) -> None:
    gateway = await make_gateway()
    response = await gateway.client.get(
        f"/api/v1/audit/events?{query}", headers=await admin(gateway)
    )
    assert_envelope(response, 422, "validation_failed")


async def test_405_names_every_method_the_path_accepts(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    headers = await admin(gateway)

    users = await gateway.client.put("/api/v1/users", headers=headers)
    user = await gateway.client.post("/api/v1/users/alice", headers=headers)

    assert_envelope(users, 405, "invalid_request")
    assert users.headers["allow"] == "GET, POST"
    assert_envelope(user, 405, "invalid_request")
    assert user.headers["allow"] == "DELETE, GET, PATCH"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer hsdk_s_" + "x" * 43},
        {"X-API-Key": "not-a-key"},
        {"Authorization": "Basic YTpi"},
    ],
)
async def test_every_401_carries_the_credential_challenge(
    make_gateway: GatewayFactory, headers: dict[str, str]
) -> None:
    gateway = await make_gateway()
    response = await gateway.client.get("/api/v1/jobs", headers=headers)

    assert_envelope(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == (
        'Bearer realm="hypersdk", ApiKey header="X-API-Key"'
    )


async def test_a_failed_login_carries_the_challenge_and_other_errors_do_not(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    login = await gateway.client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": "wrong password"}
    )
    forbidden = await gateway.client.get(
        "/api/v1/users", headers=bearer(await gateway.login("bob"))
    )

    assert login.status_code == 401
    assert "www-authenticate" in login.headers
    assert forbidden.status_code == 403
    assert "www-authenticate" not in forbidden.headers


async def test_a_put_to_the_rotate_route_is_a_405_not_a_secret_named_rotate(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    headers = await admin(gateway)

    response = await gateway.client.put("/api/v1/secrets/lab/rotate", json={"data": {"k": "v"}})
    authenticated = await gateway.client.put(
        "/api/v1/secrets/lab/rotate", json={"data": {"k": "v"}}, headers=headers
    )

    assert response.status_code == 401
    assert_envelope(authenticated, 405, "invalid_request")
    assert authenticated.headers["allow"] == "POST"
