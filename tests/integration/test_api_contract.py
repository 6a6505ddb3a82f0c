"""The API contract: schemathesis fuzzes the live gateway from its own OpenAPI document.

A platform of its own (isolated_stack_config + devstack.up), so that schemathesis' random
writes as admin cannot disturb other tests. Admin calls go with an API key holding all ten
permissions: a session token would die the first time schemathesis tries POST /auth/logout or
/auth/refresh. Every response must be documented (status code, content type, body schema);
none may be a 5xx; no error body may carry a stack trace or a credential.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from .conftest import ADMIN_PASSWORD, Api, isolated_stack_config
from .conftest import devstack as devstack_module

ALL_PERMISSIONS = [
    "vms:browse", "jobs:view", "vms:export", "jobs:cancel", "providers:configure",
    "users:manage", "apikeys:manage", "audit:view", "secrets:manage", "system:configure",
]  # fmt: skip
# Examples per operation and generation mode; ~45 operations: bounded to keep the run short.
MAX_EXAMPLES = 8
CREDENTIAL = re.compile(r"hsdk_[sk]_[0-9A-Za-z_-]{16,}|Bearer\s+\S{16,}", re.IGNORECASE)


@dataclass(frozen=True)
class ContractStack:
    api: Api
    admin_token: str
    api_key: str
    secrets: tuple[str, ...]

    @property
    def auth(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


@pytest.fixture(scope="module")
def contract_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContractStack]:
    with isolated_stack_config(tmp_path_factory.mktemp("contract")) as config:
        # Fuzzing sends hundreds of calls a minute as one principal; the limiter has its tests.
        config.extra_env["HYPERSDK_GATEWAY_RATE_LIMIT_PER_MINUTE"] = "1000000"
        devstack_module.up(config, admin_password=ADMIN_PASSWORD)
        api = Api(config.gateway_url)
        token = api.login("admin", ADMIN_PASSWORD)
        status, issued, _ = api.call(
            "POST", "/api/v1/api-keys", {"name": "contract", "scopes": ALL_PERMISSIONS}, token=token
        )
        assert status == 201, issued
        key = str(issued["key"])
        yield ContractStack(
            api=api, admin_token=token, api_key=key, secrets=(ADMIN_PASSWORD, token, key)
        )


@pytest.fixture(scope="module")
def api_schema(contract_stack: ContractStack) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "base-url": contract_stack.api.base,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_url(
        f"{contract_stack.api.base}/api/v1/openapi.json", config=config
    )


schema = schemathesis.pytest.from_fixture("api_schema")


def leaks(contract_stack: ContractStack, body: str) -> list[str]:
    """What an error body must never hold: a stack trace or a credential."""
    found = []
    if "Traceback" in body or 'File "' in body:
        found.append("a stack trace")
    if CREDENTIAL.search(body) or any(secret in body for secret in contract_stack.secrets):
        found.append("a credential")
    return found


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=False)
def test_every_operation_keeps_its_contract(
    case: schemathesis.Case, contract_stack: ContractStack
) -> None:
    response = case.call_and_validate(headers=contract_stack.auth)

    if response.status_code >= 400:
        assert not leaks(contract_stack, response.text), response.text
        assert set(json.loads(response.text)) == {"error"}
