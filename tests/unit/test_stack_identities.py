"""How a stack's identities are derived: RabbitMQ definitions per stack, PostgreSQL roles."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import sys
from pathlib import Path

import pytest

from hypersdk_kit.database import ServiceRole, scram_verifier

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import devstack


def _stack(tmp_path: Path, *, harness: bool) -> devstack.StackConfig:
    config = devstack.StackConfig(
        state_dir=tmp_path,
        database="hypersdk_test_ab12",
        amqp_vhost="hypersdk-test-ab12",
        amqp_login_prefix="hypersdk-test-ab12",
        db_role_prefix="hypersdk_test_ab12",
        harness=harness,
    )
    devstack.ensure_credentials(config)
    return config


def test_each_service_gets_its_own_generated_passwords_in_private_files(tmp_path: Path) -> None:
    config = _stack(tmp_path, harness=False)
    passwords = []
    postgres = (*devstack.MIGRATED, *devstack.EXTRA_DB_LOGINS)
    for kind, names in (("amqp", devstack.SERVICES), ("postgres", postgres)):
        directory = config.secret_dir / kind
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert sorted(p.name for p in directory.iterdir()) == sorted(names)
        for path in directory.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            passwords.append(path.read_text().strip())
    assert len(set(passwords)) == len(passwords)
    assert all(len(p) >= 32 for p in passwords)
    devstack.ensure_credentials(config)  # kept, not regenerated
    assert (config.secret_dir / "amqp" / "identity").read_text().strip() in passwords


def test_stack_definitions_are_the_production_grants_renamed(tmp_path: Path) -> None:
    production = json.loads(devstack.RABBITMQ_DEFINITIONS.read_text())
    config = _stack(tmp_path, harness=False)
    stack = devstack.bus_definitions(config)
    vhost, prefix = config.amqp_vhost, config.amqp_login_prefix

    def renamed(item: dict[str, str]) -> dict[str, str]:
        user = item["user"].replace("hypersdk-", f"{prefix}-", 1)
        return {**item, "user": user, "vhost": vhost}

    assert stack["permissions"] == [renamed(p) for p in production["permissions"]]
    assert stack["topic_permissions"] == [renamed(p) for p in production["topic_permissions"]]
    assert stack["vhosts"] == [{"name": vhost}]
    assert production["policies"], "the subscriber-queue cap (decision 0054) is a policy"
    for section in ("policies", "exchanges", "queues", "bindings"):
        assert stack[section] == [{**item, "vhost": vhost} for item in production[section]]
    for section, items in stack.items():  # whatever section has a vhost gets the stack's
        for item in items if isinstance(items, list) else []:
            assert item.get("vhost", vhost) == vhost, (section, item)
    users = {user["name"]: user for user in stack["users"]}
    assert set(users) == {f"{prefix}-{service}" for service in devstack.SERVICES}
    assert "guest" not in json.dumps(stack)
    for service in devstack.SERVICES:
        password = (config.secret_dir / "amqp" / service).read_text().strip()
        assert password not in json.dumps(stack)
        # RabbitMQ's sha256 scheme: the login works with exactly this password.
        raw = base64.b64decode(users[f"{prefix}-{service}"]["password_hash"])
        assert raw[4:] == hashlib.sha256(raw[:4] + password.encode()).digest()


def test_only_test_stacks_have_a_harness_and_it_is_confined_to_its_vhost(tmp_path: Path) -> None:
    plain = devstack.bus_definitions(_stack(tmp_path / "plain", harness=False))
    assert not [u for u in plain["users"] if u["name"].endswith("-harness")]
    config = _stack(tmp_path / "test", harness=True)
    stack = devstack.bus_definitions(config)
    (harness,) = [p for p in stack["permissions"] if p["user"].endswith("-harness")]
    assert harness["vhost"] == config.amqp_vhost
    assert config.amqp_url().startswith(f"amqp://{config.amqp_vhost}-harness:")


def test_services_get_their_own_urls_and_audit_learns_the_logins(tmp_path: Path) -> None:
    env = _stack(tmp_path, harness=True).service_env()
    for service in devstack.SERVICES:
        url = env[f"HYPERSDK_{service.upper()}_AMQP_URL"]
        assert url.startswith(f"amqp://hypersdk-test-ab12-{service}:")
        assert url.endswith("/hypersdk-test-ab12")
        assert env[f"HYPERSDK_{service.upper()}_DECLARE_TOPOLOGY"] == "false"
    for service in devstack.MIGRATED:
        dsn = env[f"HYPERSDK_{service.upper()}_DATABASE_URL"]
        assert ServiceRole.of_dsn(dsn).name == f"hypersdk_test_ab12_{service}"
    publishers = json.loads(env["HYPERSDK_AUDIT_PUBLISHERS"])
    assert publishers == {f"hypersdk-test-ab12-{s}": s for s in devstack.SERVICES}
    assert not any("harness" in key for key in env if key.endswith("AMQP_URL"))


def test_a_service_role_comes_from_its_database_url() -> None:
    role = ServiceRole.of_dsn("postgresql://hypersdk_audit:s3cr%40t@db:5432/hypersdk")
    assert (role.name, role.password) == ("hypersdk_audit", "s3cr@t")
    assert "s3cr" not in repr(role)
    for bad in (
        "postgresql://hypersdk_audit@db/hypersdk",  # no password
        'postgresql://audit";drop:pw@db/hypersdk',  # not an identifier
        "postgresql://Audit:pw@db/hypersdk",  # would need quoting
        "postgresql://:pw@db/hypersdk",
    ):
        with pytest.raises(ValueError, match="database URL"):
            ServiceRole.of_dsn(bad)


def test_the_scram_verifier_is_postgresqls_for_that_password() -> None:
    verifier = scram_verifier("correct horse battery staple")
    assert verifier != scram_verifier("correct horse battery staple")  # salted
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256"
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac(
        "sha256", b"correct horse battery staple", base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert stored_key == hashlib.sha256(client_key).digest()
    assert server_key == hmac.new(salted, b"Server Key", "sha256").digest()
    assert "correct" not in verifier
