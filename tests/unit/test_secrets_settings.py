"""The secrets service reaches Vault one way: a token file, or an AppRole's two files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hypersdk_secrets.config import SecretsSettings

BASE = {
    "amqp_url": "amqp://u:p@mq/x",
    "policy_public_key_file": "/keys/policy.pub",
    "gateway_public_key_file": "/keys/gateway.pub",
}


def test_an_approle_or_a_token_file() -> None:
    approle = SecretsSettings.model_validate(
        BASE | {"vault_role_id_file": "/r/role-id", "vault_secret_id_file": "/r/secret-id"}
    )
    assert approle.vault_secret_id_file == Path("/r/secret-id")
    assert approle.vault_token_file is None
    token = SecretsSettings.model_validate(BASE | {"vault_token_file": "/r/token"})
    assert token.vault_role_id_file is None


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({}, "either"),
        ({"vault_role_id_file": "/r/role-id"}, "needs both"),
        ({"vault_secret_id_file": "/r/secret-id"}, "needs both"),
        (
            {
                "vault_token_file": "/r/token",
                "vault_role_id_file": "/r/role-id",
                "vault_secret_id_file": "/r/secret-id",
            },
            "not both",
        ),
    ],
    ids=["neither", "role ID alone", "secret ID alone", "both ways"],
)
def test_one_way_exactly(extra: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        SecretsSettings.model_validate(BASE | extra)
