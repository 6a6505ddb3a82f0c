"""The bus's AsyncAPI document: valid AsyncAPI 3.0.0, complete, self-contained and truthful.

Validated against the official AsyncAPI 3.0.0 JSON Schema, vendored in tests/data (its source
and commit in the ``.source`` file beside it), so CI checks every change of the contracts.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from jsonschema import Draft7Validator
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from hypersdk_audit.adapters.inbound import bus as audit_bus
from hypersdk_contracts import commands
from hypersdk_contracts.asyncapi import (
    DIRECT_REPLY_TO,
    REPLIES_CHANNEL,
    RPC_ANSWERS,
    VHOST,
    WORK_QUEUES,
    asyncapi_document,
    main,
)
from hypersdk_contracts.base import Message
from hypersdk_contracts.catalogue import emitter_of
from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import (
    CLOUDEVENTS_BATCH_CONTENT_TYPE,
    CLOUDEVENTS_CONTENT_TYPE,
    RequestContext,
    event_envelope,
    new_event,
)
from hypersdk_contracts.errors import ErrorBody, ErrorCode
from hypersdk_contracts.events import EVENT_TYPES, LoginSucceeded, RequestCompleted
from hypersdk_contracts.names import EVENTS_EXCHANGE, EXPORT_JOBS_QUEUE, RpcQueue
from hypersdk_contracts.rpc import LoginRequest, RpcReply, UserView
from hypersdk_exporter.adapters.inbound import bus as exporter_bus
from hypersdk_identity.adapters.inbound import rpc as identity_rpc
from hypersdk_kit import bus as kit_bus
from hypersdk_policy.adapters.inbound import rpc as policy_rpc
from hypersdk_secrets.adapters.inbound import rpc as secrets_rpc
from hypersdk_webhooks.adapters.inbound import bus as webhooks_bus

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "tests" / "data" / "asyncapi-3.0.0.schema.json"
SOURCE_FILE = SCHEMA_FILE.with_name(SCHEMA_FILE.name + ".source")
DOCUMENT_URI = "urn:hypersdk:asyncapi"


@functools.cache
def asyncapi_validator() -> Validator:
    """A validator of the official AsyncAPI 3.0.0 schema, of the draft the schema declares."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


def payload_validator(document: dict[str, Any], message: str) -> Draft7Validator:
    """Validates a message body against the payload schema of a message of the document."""
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT7)
    )
    pointer = f"/components/messages/{message}/payload"
    return Draft7Validator(
        {"$ref": f"{DOCUMENT_URI}#{pointer}"},
        registry=registry,
        format_checker=Draft7Validator.FORMAT_CHECKER,
    )


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The node a local reference (``#/a/b``) points at; KeyError if there is none."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def keys_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys_in(item)


# ---- the official schema and validation ------------------------------------------------------


def test_the_vendored_schema_is_the_published_file_and_declares_draft_7() -> None:
    content = SCHEMA_FILE.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()
    source = SOURCE_FILE.read_text(encoding="utf-8")

    assert source.count("\n") == 1
    assert "github.com/asyncapi/spec-json-schemas/" in source
    assert f"git blob {blob}" in source
    schema = json.loads(content)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema"
    assert validator_for(schema) is Draft7Validator
    assert schema["properties"]["asyncapi"]["const"] == "3.0.0"


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}"
        for error in asyncapi_validator().iter_errors(document)
    ]

    assert errors == []
    assert document["asyncapi"] == "3.0.0"


def _drop_action(document: dict[str, Any]) -> None:
    del document["operations"]["identity.rpc.login.receive"]["action"]


def _asyncapi_2_verb(document: dict[str, Any]) -> None:
    document["operations"][f"{EXPORT_JOBS_QUEUE}.send"]["action"] = "publish"


def _unknown_message_field(document: dict[str, Any]) -> None:
    document["components"]["messages"]["identity.login.succeeded"]["payloads"] = {}


def _exchange_channel_called_a_queue(document: dict[str, Any]) -> None:
    document["channels"]["identity.login.succeeded"]["bindings"]["amqp"]["is"] = "queue"


def _reply_address_not_an_expression(document: dict[str, Any]) -> None:
    reply = document["operations"]["identity.rpc.login.receive"]["reply"]
    reply["address"]["location"] = "reply_to"


def _no_info_version(document: dict[str, Any]) -> None:
    del document["info"]["version"]


def _no_server_protocol(document: dict[str, Any]) -> None:
    del document["servers"]["rabbitmq"]["protocol"]


def _other_spec_version(document: dict[str, Any]) -> None:
    document["asyncapi"] = "2.6.0"


@pytest.mark.parametrize(
    "mutate",
    [
        _drop_action,
        _asyncapi_2_verb,
        _unknown_message_field,
        _exchange_channel_called_a_queue,
        _reply_address_not_an_expression,
        _no_info_version,
        _no_server_protocol,
        _other_spec_version,
    ],
)
def test_a_broken_document_fails_validation(
    document: dict[str, Any], mutate: Callable[[dict[str, Any]], None]
) -> None:
    broken = copy.deepcopy(document)

    mutate(broken)

    assert broken != document
    assert not asyncapi_validator().is_valid(broken)


# ---- complete and self-contained -------------------------------------------------------------


def test_every_event_has_a_channel_on_the_exchange_a_message_and_its_emitters_send(
    document: dict[str, Any],
) -> None:
    for routing_key, model in EVENT_TYPES.items():
        channel = document["channels"][routing_key]
        binding = channel["bindings"]["amqp"]
        message = document["components"]["messages"][routing_key]
        envelope = resolve(document, message["payload"]["$ref"])
        fixed = envelope["allOf"][1]["properties"]
        operation = document["operations"][f"{routing_key}.send"]
        emitter = emitter_of(routing_key)

        assert channel["address"] == routing_key
        assert binding["is"] == "routingKey"
        assert binding["exchange"]["name"] == EVENTS_EXCHANGE
        assert binding["exchange"]["type"] == "topic"
        assert channel["messages"][routing_key] == {"$ref": f"#/components/messages/{routing_key}"}
        assert message["contentType"] == CLOUDEVENTS_CONTENT_TYPE
        assert message["bindings"]["amqp"]["messageType"] == f"io.hypersdk.{routing_key}"
        assert fixed["type"] == {"const": f"io.hypersdk.{routing_key}"}
        assert fixed["source"] == {"const": f"/hypersdk/{emitter}"}
        assert fixed["data"] == {"$ref": f"#/components/schemas/{model.__name__}"}
        assert operation["action"] == "send"
        assert operation["tags"] == [{"name": emitter}]
        assert operation["channel"] == {"$ref": f"#/channels/{routing_key}"}


def test_the_gateways_events_may_also_travel_as_batches(document: dict[str, Any]) -> None:
    batched = {
        key.removesuffix(".batch")
        for key in document["components"]["messages"]
        if key.endswith(".batch")
    }
    message = document["components"]["messages"]["gateway.request.completed.batch"]

    assert batched == {key for key in EVENT_TYPES if emitter_of(key) == "gateway"}
    assert message["contentType"] == CLOUDEVENTS_BATCH_CONTENT_TYPE
    assert message["payload"]["type"] == "array"
    channel = "#/channels/gateway.request.completed"
    sent = document["operations"]["gateway.request.completed.send"]["messages"]
    assert {"$ref": f"{channel}/messages/gateway.request.completed.batch"} in sent


def test_every_request_queue_is_received_by_its_owner_with_a_reply(
    document: dict[str, Any],
) -> None:
    for queue in RpcQueue:
        operation = document["operations"][f"{queue}.receive"]
        reply = operation["reply"]
        channel = resolve(document, operation["channel"]["$ref"])
        (in_replies,) = (resolve(document, ref["$ref"]) for ref in reply["messages"])
        reply_message = resolve(document, in_replies["$ref"])

        assert operation["action"] == "receive"
        assert operation["tags"] == [{"name": queue.split(".", 1)[0]}]
        assert channel["address"] == queue
        assert channel["bindings"]["amqp"]["queue"]["name"] == queue
        assert reply["channel"] == {"$ref": f"#/channels/{REPLIES_CHANNEL}"}
        assert reply["address"]["location"] == "$message.header#/reply_to"
        assert reply_message["name"] == f"{queue}.reply"
        assert reply_message["correlationId"]["location"] == "$message.header#/correlation_id"
    replies = document["channels"][REPLIES_CHANNEL]
    assert replies["address"] is None
    assert replies["bindings"]["amqp"]["queue"]["name"] == DIRECT_REPLY_TO


def test_every_work_queue_carries_its_commands_sent_and_received(
    document: dict[str, Any],
) -> None:
    declared = {
        model
        for model in vars(commands).values()
        if inspect.isclass(model) and issubclass(model, Message) and hasattr(model, "command_type")
    }
    carried = {model for models in WORK_QUEUES.values() for model in models}
    channel = document["channels"][EXPORT_JOBS_QUEUE]
    message = document["components"]["messages"][VmExportRequested.command_type]

    assert declared == carried
    assert channel["address"] == EXPORT_JOBS_QUEUE
    assert channel["bindings"]["amqp"]["is"] == "queue"
    assert message["contentType"] == CLOUDEVENTS_CONTENT_TYPE
    assert document["operations"][f"{EXPORT_JOBS_QUEUE}.send"]["action"] == "send"
    assert document["operations"][f"{EXPORT_JOBS_QUEUE}.receive"]["action"] == "receive"


def test_every_reference_resolves_inside_the_document(document: dict[str, Any]) -> None:
    refs = set(refs_in(document))

    assert len(refs) > len(EVENT_TYPES) + len(RpcQueue)
    for ref in refs:
        resolve(document, ref)  # raises KeyError (or fails the assertion) if it is dangling
    assert "$defs" not in set(keys_in(document))


def test_operations_name_only_messages_of_their_own_channels(document: dict[str, Any]) -> None:
    for name, operation in document["operations"].items():
        pairs = [(operation["channel"], operation["messages"])]
        if "reply" in operation:
            pairs.append((operation["reply"]["channel"], operation["reply"]["messages"]))
        for channel, messages in pairs:
            assert messages, name
            for message in messages:
                assert message["$ref"].startswith(channel["$ref"] + "/messages/"), name


def test_the_document_is_the_same_on_every_call_and_sorted(document: dict[str, Any]) -> None:
    again = asyncapi_document()

    assert json.dumps(again) == json.dumps(document)  # the same order too, not only content
    for collection in (
        document["channels"],
        document["operations"],
        document["components"]["schemas"],
        document["components"]["messages"],
    ):
        assert list(collection) == sorted(collection)


def test_changing_a_document_does_not_change_the_next_one(document: dict[str, Any]) -> None:
    changed = asyncapi_document()
    changed["servers"]["rabbitmq"]["host"] = "elsewhere"
    changed["components"]["schemas"]["CloudEvent"]["title"] = "changed"

    assert asyncapi_document() == document


def test_docstrings_and_field_descriptions_carry_over(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for routing_key, model in EVENT_TYPES.items():
        first_paragraph = " ".join((inspect.getdoc(model) or "").split("\n\n")[0].split())
        message = document["components"]["messages"][routing_key]
        properties = schemas[model.__name__]["properties"]

        assert message["title"] == model.__name__
        assert message["summary"] == first_paragraph
        assert message["x-audit-action"] == model.audit_action
        for field_name, field in model.model_fields.items():
            assert properties[field.alias or field_name]["description"] == field.description
    request = document["components"]["messages"]["identity.rpc.login.request"]
    assert request["summary"] == "Check a username and password and open a session."
    assert schemas["LoginRequest"]["properties"]["username"]["description"] == "Login name."


def test_the_broker_names_match_the_provisioned_topology() -> None:
    definitions = json.loads(
        (REPO / "deploy" / "rabbitmq" / "definitions.json").read_text(encoding="utf-8")
    )
    (exchange,) = (x for x in definitions["exchanges"] if x["name"] == EVENTS_EXCHANGE)

    assert [vhost["name"] for vhost in definitions["vhosts"]] == [VHOST]
    assert exchange["type"] == "topic"
    assert exchange["durable"]
    assert not exchange["auto_delete"]
    assert EXPORT_JOBS_QUEUE in {queue["name"] for queue in definitions["queues"]}
    assert DIRECT_REPLY_TO == kit_bus.DIRECT_REPLY_TO


# ---- truthful: what the platform sends is what the document says ----------------------------


def _context() -> RequestContext:
    return RequestContext(actor="alice", source_ip="127.0.0.1", request_id="r1")


def test_an_events_envelope_validates_against_its_message_and_a_wrong_one_does_not(
    document: dict[str, Any],
) -> None:
    validator = payload_validator(document, "identity.login.succeeded")
    event = event_envelope(
        LoginSucceeded(username="alice", method="local"),
        service="identity",
        subject="user/alice",
        context=_context(),
    ).to_wire()
    from_policy = {**event, "source": "/hypersdk/policy"}
    without_username = {**event, "data": {"method": "local"}}
    other_type = {**event, "type": "io.hypersdk.identity.login.failed"}

    assert list(validator.iter_errors(event)) == []
    assert not validator.is_valid(from_policy)
    assert not validator.is_valid(without_username)
    assert not validator.is_valid(other_type)


def test_a_batch_message_validates_against_the_batch_message(document: dict[str, Any]) -> None:
    validator = payload_validator(document, "gateway.request.completed.batch")
    events = [
        event_envelope(
            RequestCompleted(method="GET", route="/api/v1/jobs", status=200, duration_ms=1.5),
            service="gateway",
            subject=None,
            context=_context(),
        ).to_wire()
        for _ in range(2)
    ]

    assert list(validator.iter_errors(events)) == []
    assert not validator.is_valid([])
    assert not validator.is_valid(events[0])


def test_a_command_validates_against_its_work_queue_message(document: dict[str, Any]) -> None:
    validator = payload_validator(document, VmExportRequested.command_type)
    command = VmExportRequested(job_id="j1", provider="lab", vm="web-1", format="qcow2", grant="g")
    envelope = new_event(
        service="exporter",
        routing_key=VmExportRequested.command_type,
        data=command,
        subject=None,
        context=_context(),
    ).to_wire()

    assert list(validator.iter_errors(envelope)) == []
    assert not validator.is_valid({**envelope, "data": {"job_id": "j1"}})


def test_requests_and_replies_validate_against_their_messages(document: dict[str, Any]) -> None:
    request = LoginRequest(username="alice", password="pw", context=_context())
    user = UserView(
        username="alice", generation=1, source="local", created_at=datetime.now(UTC)
    ).model_dump(mode="json")
    answered = RpcReply(ok=True, result=[user]).model_dump(mode="json")
    failed = RpcReply(
        ok=False, error=ErrorBody(code=ErrorCode.FORBIDDEN, message="No.")
    ).model_dump(mode="json")
    requests = payload_validator(document, "identity.rpc.login.request")
    replies = payload_validator(document, "identity.rpc.list_users.reply")

    assert list(requests.iter_errors(request.model_dump(mode="json"))) == []
    assert not requests.is_valid({"username": "alice"})
    assert list(replies.iter_errors(answered)) == []
    assert list(replies.iter_errors(failed)) == []
    assert not replies.is_valid({**answered, "result": user})  # one user, not a list of them


def _registered_answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[type, Any]]:
    """Request model and answer's return type of every queue the services register."""
    found: dict[str, tuple[type, Any]] = {}

    def record(_broker: object, queue: str, model: type, answer: Any, **_: object) -> None:
        assert queue not in found, queue
        result = get_type_hints(answer)["return"]
        found[str(queue)] = (model, None if result is type(None) else result)

    for module in (identity_rpc, policy_rpc, secrets_rpc, exporter_bus, audit_bus, webhooks_bus):
        monkeypatch.setattr(module, "serve_rpc", record)
    unused: Any = object()  # registering only keeps what it is given, for its answers
    identity_rpc.register_rpc(unused, unused, signer=unused, guard=unused, api_keys=unused)
    policy_rpc.register_rpc(unused, unused, guard=unused, signer=unused)
    secrets_rpc.register_rpc(unused, unused, guard=unused)
    exporter_bus.register_rpc(unused, unused, guard=unused)
    audit_bus.register_consumers(
        unused, unused, prefetch=1, batch_size=1, batch_wait_seconds=0.01, guard=unused
    )
    webhooks_bus.register_rpc(unused, unused, unused)
    webhooks_bus.register_subscription_rpc(unused, unused, unused)
    return found


def test_the_request_reply_table_is_what_the_services_register(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered = _registered_answers(monkeypatch)

    assert set(registered) == {str(queue) for queue in RpcQueue}
    assert {str(queue): answer for queue, answer in RPC_ANSWERS.items()} == registered


# ---- the command line ------------------------------------------------------------------------


def test_the_command_writes_the_document_as_sorted_indented_json(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    output = tmp_path / "asyncapi.json"

    assert main(["--output", str(output)]) == 0
    text = output.read_text(encoding="utf-8")
    printed = subprocess.run(
        [sys.executable, "-m", "hypersdk_contracts.asyncapi"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout

    assert json.loads(text) == document
    assert text == json.dumps(document, sort_keys=True, indent=2) + "\n"
    assert printed == text


def test_subscribers_receive_every_event_on_their_tap(document: dict[str, Any]) -> None:
    channel = document["channels"]["public.events"]
    receive = document["operations"]["public.events.receive"]

    assert channel["address"] == "sub.{subscription_id}"
    assert set(channel["messages"]) == set(EVENT_TYPES)
    assert receive["action"] == "receive"
    assert len(receive["messages"]) == len(EVENT_TYPES)
