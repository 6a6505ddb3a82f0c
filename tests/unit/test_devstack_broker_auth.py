"""devstack points RabbitMQ's HTTP auth backend at a stack's webhooks service (decision 0054)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import devstack


def test_the_broker_asks_internal_users_first_then_the_stacks_authorizer() -> None:
    expression = devstack.broker_auth_expression(15690)
    assert "[rabbit_auth_backend_internal, rabbit_auth_backend_http]" in expression
    assert "{http_method, post}" in expression
    for name in ("user", "vhost", "resource", "topic"):
        assert f'{{{name}_path, "http://127.0.0.1:15690/auth/{name}"}}' in expression
    assert expression.endswith("ok.")


def test_only_a_stack_with_a_port_serves_the_authorizer(tmp_path: Path) -> None:
    served = devstack.StackConfig(state_dir=tmp_path, broker_auth_port=15691)
    silent = devstack.StackConfig(state_dir=tmp_path)
    for kind in ("amqp", "postgres"):
        (tmp_path / "secrets" / kind).mkdir(parents=True)
        for service in (*devstack.SERVICES, devstack.HARNESS):
            (tmp_path / "secrets" / kind / service).write_text("pw")
    assert served.service_env()["HYPERSDK_WEBHOOKS_BROKER_AUTH_PORT"] == "15691"
    assert served.service_env()["HYPERSDK_WEBHOOKS_BROKER_AUTH_HOST"] == "127.0.0.1"
    assert "HYPERSDK_WEBHOOKS_BROKER_AUTH_PORT" not in silent.service_env()
    devstack.configure_broker_auth(silent)  # port 0: touches no broker


def test_make_ups_stack_serves_it_on_a_fixed_port() -> None:
    assert devstack._config_from_env().broker_auth_port == 15690
