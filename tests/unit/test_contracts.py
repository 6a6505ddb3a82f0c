"""The shared contracts: the permission matrix, the CloudEvents envelope and the message models."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hypersdk_contracts import commands, envelope, errors, events, rpc
from hypersdk_contracts.base import Message
from hypersdk_contracts.envelope import CloudEvent, RequestContext, new_event
from hypersdk_contracts.events import EVENT_TYPES, LoginFailed, SessionCreated
from hypersdk_contracts.names import RoutingKey
from hypersdk_contracts.permissions import ROLE_PERMISSIONS, Permission, Role
from hypersdk_contracts.rpc import LoginRequest

# docs/contracts.md, "Roles and permissions (exactly this matrix)", copied by hand.
# Columns: admin, operator, viewer, auditor.
DESIGN_MATRIX_ROWS: dict[str, tuple[str, str, str, str]] = {
    "vms:browse": ("yes", "yes", "yes", "yes"),
    "jobs:view": ("yes", "yes", "yes", "yes"),
    "vms:export": ("yes", "yes", "no", "no"),
    "jobs:cancel": ("yes", "yes", "no", "no"),
    "providers:configure": ("yes", "yes", "no", "no"),
    "users:manage": ("yes", "no", "no", "no"),
    "apikeys:manage": ("yes", "no", "no", "no"),
    "audit:view": ("yes", "no", "no", "yes"),
    "secrets:manage": ("yes", "no", "no", "no"),
    "system:configure": ("yes", "no", "no", "no"),
}
DESIGN_ROLES = ("admin", "operator", "viewer", "auditor")

CONTEXT = RequestContext(actor="alice", source_ip="203.0.113.7", request_id="req-0001")


def _design_grants() -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {role: set() for role in DESIGN_ROLES}
    for permission, cells in DESIGN_MATRIX_ROWS.items():
        for role, cell in zip(DESIGN_ROLES, cells, strict=True):
            if cell == "yes":
                grants[role].add(permission)
    return grants


def _all_message_models() -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for module in (commands, envelope, errors, events, rpc):
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, Message) and value.__module__ == module.__name__:
                found[value.__qualname__] = value
    return [found[name] for name in sorted(found)]


# ---- permissions ------------------------------------------------------------------------------


def test_permission_names_are_the_ten_of_the_design() -> None:
    assert {p.value for p in Permission} == set(DESIGN_MATRIX_ROWS)
    assert len(Permission) == 10


def test_role_names_are_the_four_of_the_design() -> None:
    assert {r.value for r in Role} == set(DESIGN_ROLES)


def test_role_permissions_equal_the_design_matrix() -> None:
    in_code = {
        role.value: {permission.value for permission in permissions}
        for role, permissions in ROLE_PERMISSIONS.items()
    }
    assert in_code == _design_grants()


def test_design_matrix_copy_has_the_expected_shape() -> None:
    # Guards the literal copy itself: 10 rows, admin everywhere, 2 + 3 + 0 + 1 extra grants.
    grants = _design_grants()
    assert len(DESIGN_MATRIX_ROWS) == 10
    assert len(grants["admin"]) == 10
    assert len(grants["operator"]) == 5
    assert grants["viewer"] == {"vms:browse", "jobs:view"}
    assert grants["auditor"] == {"vms:browse", "jobs:view", "audit:view"}


# ---- the CloudEvents envelope -----------------------------------------------------------------


def _login_failed_event() -> CloudEvent:
    return new_event(
        service="identity",
        routing_key=RoutingKey.LOGIN_FAILED.value,
        data=LoginFailed(username="mallory", reason="invalid_credentials"),
        subject="user/mallory",
        context=CONTEXT,
    )


def test_wire_form_uses_cloudevents_attribute_names() -> None:
    wire = _login_failed_event().to_wire()

    assert wire["specversion"] == "1.0"
    assert wire["type"] == "io.hypersdk.identity.login.failed"
    assert wire["source"] == "/hypersdk/identity"
    assert wire["datacontenttype"] == "application/json"
    assert wire["actor"] == "alice"
    assert wire["sourceip"] == "203.0.113.7"
    assert wire["requestid"] == "req-0001"
    assert "source_ip" not in wire
    assert "request_id" not in wire
    assert wire["data"] == {"username": "mallory", "reason": "invalid_credentials"}
    assert wire["time"].endswith("Z")


def test_wire_form_round_trips_through_json() -> None:
    event = _login_failed_event()

    parsed = CloudEvent.model_validate(json.loads(json.dumps(event.to_wire())))

    assert parsed == event
    assert parsed.routing_key == "identity.login.failed"
    assert parsed.context.model_copy(update={"traceparent": None}) == CONTEXT
    assert parsed.traceparent == event.traceparent
    assert parsed.time == event.time
    assert parsed.time.utcoffset() == timedelta(0)


def test_events_continue_the_callers_trace_with_a_new_span() -> None:
    parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    event = new_event(
        service="identity",
        routing_key=RoutingKey.USER_CREATED.value,
        data=events.UserCreated(username="bob"),
        subject=None,
        context=CONTEXT.model_copy(update={"traceparent": parent}),
    )
    assert event.traceparent is not None
    version, trace_id, span_id, flags = event.traceparent.split("-")
    assert (version, trace_id, flags) == ("00", "ab" * 16, "01")
    assert span_id != "cd" * 8
    assert event.to_wire()["traceparent"] == event.traceparent
    with pytest.raises(ValidationError):
        RequestContext(traceparent="00-not-a-trace")


def test_wire_form_leaves_out_absent_extensions() -> None:
    event = new_event(
        service="identity",
        routing_key=RoutingKey.USER_CREATED.value,
        data=events.UserCreated(username="bob"),
        subject=None,
        context=None,
    )
    wire = event.to_wire()

    assert not {"actor", "sourceip", "requestid", "subject"} & set(wire)
    assert CloudEvent.model_validate(wire) == event


@pytest.mark.parametrize("routing_key", list(RoutingKey))
def test_type_is_prefix_plus_routing_key(routing_key: RoutingKey) -> None:
    payload_class = EVENT_TYPES[routing_key.value]
    event = CloudEvent(
        id="e-1",
        source="/hypersdk/test",
        type="io.hypersdk." + routing_key.value,
        time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        data={},
    )
    assert event.routing_key == routing_key.value
    assert payload_class.routing_key is routing_key


def test_event_ids_are_unique() -> None:
    ids = {_login_failed_event().id for _ in range(50)}
    assert len(ids) == 50


def test_envelope_is_frozen() -> None:
    event = _login_failed_event()
    with pytest.raises(ValidationError):
        event.actor = "someone-else"  # type: ignore[misc]
    assert event.actor == "alice"


def test_envelope_rejects_unknown_attributes() -> None:
    wire = _login_failed_event().to_wire()
    with pytest.raises(ValidationError, match="extra"):
        CloudEvent.model_validate({**wire, "password": "hunter2hunter2"})


def test_envelope_rejects_other_spec_versions() -> None:
    wire = _login_failed_event().to_wire()
    with pytest.raises(ValidationError):
        CloudEvent.model_validate({**wire, "specversion": "0.3"})


def test_envelope_refuses_a_naive_time() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        CloudEvent(
            id="e-1",
            source="/hypersdk/test",
            type="io.hypersdk.identity.user.created",
            time=datetime(2025, 1, 2, 3, 4, 5),  # noqa: DTZ001 - the point of the test
            data={"username": "bob"},
        )


def test_wire_form_refuses_a_time_without_offset() -> None:
    wire = _login_failed_event().to_wire()
    with pytest.raises(ValidationError, match="timezone"):
        CloudEvent.model_validate({**wire, "time": "2025-01-02T03:04:05"})


def test_envelope_normalises_an_aware_time_to_utc() -> None:
    local = datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    event = CloudEvent(
        id="e-1", source="/hypersdk/test", type="io.hypersdk.x.y.z", time=local, data={}
    )
    assert event.time.utcoffset() == timedelta(0)
    assert event.time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event.to_wire()["time"] == "2025-01-02T03:04:05Z"


# ---- every message model ----------------------------------------------------------------------


def test_the_contract_modules_define_message_models() -> None:
    names = {model.__name__ for model in _all_message_models()}
    assert {"CloudEvent", "LoginFailed", "VmExportRequested", "JobView", "ErrorBody"} <= names


@pytest.mark.parametrize("model", _all_message_models(), ids=lambda model: model.__name__)
def test_every_message_is_frozen_and_forbids_extra_fields(model: type[BaseModel]) -> None:
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"


def test_event_payload_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="extra"):
        LoginFailed.model_validate(
            {"username": "bob", "reason": "invalid_credentials", "password": "hunter2hunter2"}
        )


def test_event_payload_is_frozen() -> None:
    payload = SessionCreated(
        session_id="s-1", username="bob", expires_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    with pytest.raises(ValidationError):
        payload.username = "mallory"  # type: ignore[misc]


def test_command_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="extra"):
        commands.VmExportRequested.model_validate(
            {"job_id": "j", "provider": "p", "vm": "v", "format": "raw", "priority": 1}
        )


# ---- the event catalogue ----------------------------------------------------------------------


@pytest.mark.parametrize("routing_key", list(RoutingKey))
def test_every_routing_key_has_a_payload_with_an_audit_action(routing_key: RoutingKey) -> None:
    payload_class = EVENT_TYPES[routing_key.value]
    assert payload_class.routing_key is routing_key
    assert isinstance(payload_class.audit_action, str)
    assert payload_class.audit_action.strip()


def test_event_catalogue_has_nothing_but_routing_keys() -> None:
    assert set(EVENT_TYPES) == {key.value for key in RoutingKey}


@pytest.mark.parametrize("routing_key", list(RoutingKey))
def test_routing_keys_are_service_entity_verb(routing_key: RoutingKey) -> None:
    service, entity, verb = routing_key.value.split(".")
    assert service in {"gateway", "identity", "policy", "secrets", "exporter", "audit", "webhooks"}
    assert entity
    assert verb.endswith(("ed", "en")) or verb in {"read"}  # past tense: created, written, read


@pytest.mark.parametrize(
    "build",
    [
        lambda: LoginRequest(username="ali\x00ce", password="correct horse battery"),
        lambda: LoginRequest.model_validate_json(
            '{"username": "alice", "password": "pass\\u0000word"}'
        ),
        lambda: CloudEvent.model_validate(
            {
                "id": "e-1",
                "source": "/x",
                "type": "io.hypersdk.identity.user.created",
                "time": "2026-01-01T00:00:00Z",
                "data": {"username": {"nested": ["a\x00"]}},
            }
        ),
    ],
)
def test_text_with_nul_is_refused_by_every_message(build: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        build()
    assert "NUL" in str(refused.value.errors()[0]["msg"])
