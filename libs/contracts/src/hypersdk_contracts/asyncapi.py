"""The AsyncAPI 3.0.0 document of the bus, generated from the contract models.

Everything in it comes from this package: the events and their payloads
(:data:`~hypersdk_contracts.events.EVENT_TYPES`), which service emits each
(:mod:`~hypersdk_contracts.catalogue`), the exchange and queue names
(:mod:`~hypersdk_contracts.names`), the envelope, the commands and the request/reply models.
The gateway serves it at ``/api/v1/asyncapi.json``; ``python -m hypersdk_contracts.asyncapi
[--output FILE]`` writes it.

AMQP properties (``correlation_id``, ``reply_to``) are named in runtime expressions as
``$message.header#/<property>``, as FastStream's documents do: AsyncAPI has no expression for
AMQP's basic properties, and the message ``headers`` schemas describe the AMQP headers table.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from hypersdk_contracts.base import Message
from hypersdk_contracts.catalogue import emitter_of, source_of
from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import (
    CLOUDEVENTS_BATCH_CONTENT_TYPE,
    CLOUDEVENTS_CONTENT_TYPE,
    TRACEPARENT_PATTERN,
    CloudEvent,
)
from hypersdk_contracts.events import EVENT_TYPES
from hypersdk_contracts.names import (
    EVENT_TYPE_PREFIX,
    EVENTS_EXCHANGE,
    EXPORT_JOBS_QUEUE,
    PUBLIC_EXCHANGE,
    RpcQueue,
)
from hypersdk_contracts.rpc import (
    ApiKeyIdRequest,
    ApiKeyView,
    AssignRolesRequest,
    AuditEntryView,
    AuthenticateApiKeyRequest,
    AuthenticateRequest,
    CheckpointRequest,
    CheckpointView,
    ConsistencyProofRequest,
    ConsistencyProofView,
    CreateApiKeyRequest,
    CreateExportRequest,
    CreateSubscriptionRequest,
    CreateUserRequest,
    CreateWebhookRequest,
    CredentialValue,
    DecideRequest,
    Decision,
    GetVmRequest,
    HoldIdRequest,
    HoldView,
    InclusionProofRequest,
    InclusionProofView,
    IssuedApiKey,
    IssuedSubscription,
    IssuedWebhook,
    JobIdRequest,
    JobView,
    ListApiKeysRequest,
    ListAuditEventsRequest,
    ListCheckpointsRequest,
    ListDeadLettersRequest,
    ListHoldsRequest,
    ListJobsRequest,
    ListProvidersRequest,
    ListQuarantineRequest,
    ListSecretsRequest,
    ListSessionsRequest,
    ListSubscriptionsRequest,
    ListUsersRequest,
    ListVerificationsRequest,
    ListVmsRequest,
    ListWebhooksRequest,
    LoginRequest,
    LoginResult,
    LogoutRequest,
    PermissionList,
    PermissionsOfRequest,
    PlaceHoldRequest,
    Principal,
    ProviderNameRequest,
    ProviderView,
    PublicKeysRequest,
    PublicKeysView,
    PutSecretRequest,
    QuarantinedEventView,
    RefreshRequest,
    RegisterProviderRequest,
    ReplayWebhookMessageRequest,
    ResolveCredentialRequest,
    RevokedSessions,
    RevokeSessionRequest,
    RevokeUserSessionsRequest,
    RoleList,
    RolesOfRequest,
    RotateApiKeyRequest,
    RotateSecretRequest,
    RpcReply,
    RpcRequest,
    SecretMetadata,
    SecretPathRequest,
    SecretRotation,
    SessionView,
    StartVerificationRequest,
    SubscriptionIdRequest,
    SubscriptionView,
    UpdateProviderRequest,
    UpdateUserRequest,
    UpdateWebhookRequest,
    UserNameRequest,
    UserView,
    VerificationIdRequest,
    VerificationView,
    VerifyRequest,
    VerifyResult,
    VmPage,
    VmView,
    WebhookAttemptView,
    WebhookIdRequest,
    WebhookMessageView,
    WebhookView,
)

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
JSON_CONTENT_TYPE = "application/json"
"""Content type of request/reply messages: plain JSON, not CloudEvents envelopes."""
VHOST = "hypersdk"
"""The RabbitMQ virtual host, as ``deploy/rabbitmq/definitions.json`` provisions it."""
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
"""RabbitMQ's direct reply-to pseudo-queue, which requesters consume their replies from."""
BATCHING_EMITTERS = frozenset({"gateway"})
"""Services whose events may travel several to a message (CloudEvents JSON batch format)."""
REPLIES_CHANNEL = "rpc.replies"
TRACE_HEADERS = "AmqpTraceHeaders"
SCHEMAS = "#/components/schemas/"
MESSAGES = "#/components/messages/"
PERSISTENT = 2
"""AMQP delivery mode of everything the platform publishes but requests and replies."""

WORK_QUEUES: Mapping[str, tuple[type[Message], ...]] = {
    EXPORT_JOBS_QUEUE: (VmExportRequested,),
}
"""The commands each work queue carries (each has a ``command_type``)."""

RPC_ANSWERS: Mapping[RpcQueue, tuple[type[RpcRequest], Any]] = {
    RpcQueue.IDENTITY_LOGIN: (LoginRequest, LoginResult),
    RpcQueue.IDENTITY_AUTHENTICATE: (AuthenticateRequest, Principal),
    RpcQueue.IDENTITY_LOGOUT: (LogoutRequest, None),
    RpcQueue.IDENTITY_CREATE_USER: (CreateUserRequest, UserView),
    RpcQueue.IDENTITY_LIST_USERS: (ListUsersRequest, list[UserView]),
    RpcQueue.IDENTITY_GET_USER: (UserNameRequest, UserView),
    RpcQueue.IDENTITY_UPDATE_USER: (UpdateUserRequest, UserView),
    RpcQueue.IDENTITY_DELETE_USER: (UserNameRequest, UserView),
    RpcQueue.IDENTITY_UNLOCK_USER: (UserNameRequest, None),
    RpcQueue.IDENTITY_REVOKE_USER_SESSIONS: (RevokeUserSessionsRequest, RevokedSessions),
    RpcQueue.IDENTITY_REFRESH: (RefreshRequest, LoginResult),
    RpcQueue.IDENTITY_LIST_SESSIONS: (ListSessionsRequest, list[SessionView]),
    RpcQueue.IDENTITY_REVOKE_SESSION: (RevokeSessionRequest, None),
    RpcQueue.IDENTITY_AUTHENTICATE_API_KEY: (AuthenticateApiKeyRequest, Principal),
    RpcQueue.IDENTITY_CREATE_API_KEY: (CreateApiKeyRequest, IssuedApiKey),
    RpcQueue.IDENTITY_LIST_API_KEYS: (ListApiKeysRequest, list[ApiKeyView]),
    RpcQueue.IDENTITY_REVOKE_API_KEY: (ApiKeyIdRequest, None),
    RpcQueue.IDENTITY_ROTATE_API_KEY: (RotateApiKeyRequest, IssuedApiKey),
    RpcQueue.POLICY_DECIDE: (DecideRequest, Decision),
    RpcQueue.POLICY_ASSIGN_ROLES: (AssignRolesRequest, RoleList),
    RpcQueue.POLICY_ROLES_OF: (RolesOfRequest, RoleList),
    RpcQueue.POLICY_PERMISSIONS_OF: (PermissionsOfRequest, PermissionList),
    RpcQueue.SECRETS_PUT: (PutSecretRequest, SecretMetadata),
    RpcQueue.SECRETS_DELETE: (SecretPathRequest, None),
    RpcQueue.SECRETS_LIST: (ListSecretsRequest, list[SecretMetadata]),
    RpcQueue.SECRETS_DESCRIBE: (SecretPathRequest, SecretMetadata),
    RpcQueue.SECRETS_RESOLVE_CREDENTIAL: (ResolveCredentialRequest, CredentialValue),
    RpcQueue.SECRETS_ROTATE: (RotateSecretRequest, SecretRotation),
    RpcQueue.EXPORTER_REGISTER_PROVIDER: (RegisterProviderRequest, ProviderView),
    RpcQueue.EXPORTER_LIST_PROVIDERS: (ListProvidersRequest, list[ProviderView]),
    RpcQueue.EXPORTER_GET_PROVIDER: (ProviderNameRequest, ProviderView),
    RpcQueue.EXPORTER_REMOVE_PROVIDER: (ProviderNameRequest, None),
    RpcQueue.EXPORTER_UPDATE_PROVIDER: (UpdateProviderRequest, ProviderView),
    RpcQueue.EXPORTER_LIST_VMS: (ListVmsRequest, VmPage),
    RpcQueue.EXPORTER_GET_VM: (GetVmRequest, VmView),
    RpcQueue.EXPORTER_CREATE_EXPORT: (CreateExportRequest, JobView),
    RpcQueue.EXPORTER_LIST_JOBS: (ListJobsRequest, list[JobView]),
    RpcQueue.EXPORTER_GET_JOB: (JobIdRequest, JobView),
    RpcQueue.EXPORTER_CANCEL_JOB: (JobIdRequest, JobView),
    RpcQueue.AUDIT_VERIFY: (VerifyRequest, VerifyResult),
    RpcQueue.AUDIT_LIST_EVENTS: (ListAuditEventsRequest, list[AuditEntryView]),
    RpcQueue.AUDIT_LIST_QUARANTINE: (ListQuarantineRequest, list[QuarantinedEventView]),
    RpcQueue.AUDIT_CHECKPOINT: (CheckpointRequest, CheckpointView),
    RpcQueue.AUDIT_LIST_CHECKPOINTS: (ListCheckpointsRequest, list[CheckpointView]),
    RpcQueue.AUDIT_PROVE_INCLUSION: (InclusionProofRequest, InclusionProofView),
    RpcQueue.AUDIT_PROVE_CONSISTENCY: (ConsistencyProofRequest, ConsistencyProofView),
    RpcQueue.AUDIT_PUBLIC_KEYS: (PublicKeysRequest, PublicKeysView),
    RpcQueue.AUDIT_START_VERIFICATION: (StartVerificationRequest, VerificationView),
    RpcQueue.AUDIT_GET_VERIFICATION: (VerificationIdRequest, VerificationView),
    RpcQueue.AUDIT_LIST_VERIFICATIONS: (ListVerificationsRequest, list[VerificationView]),
    RpcQueue.AUDIT_LIST_HOLDS: (ListHoldsRequest, list[HoldView]),
    RpcQueue.AUDIT_PLACE_HOLD: (PlaceHoldRequest, HoldView),
    RpcQueue.AUDIT_LIFT_HOLD: (HoldIdRequest, HoldView),
    RpcQueue.WEBHOOKS_CREATE: (CreateWebhookRequest, IssuedWebhook),
    RpcQueue.WEBHOOKS_LIST: (ListWebhooksRequest, list[WebhookView]),
    RpcQueue.WEBHOOKS_GET: (WebhookIdRequest, WebhookView),
    RpcQueue.WEBHOOKS_UPDATE: (UpdateWebhookRequest, WebhookView),
    RpcQueue.WEBHOOKS_PAUSE: (WebhookIdRequest, WebhookView),
    RpcQueue.WEBHOOKS_RESUME: (WebhookIdRequest, WebhookView),
    RpcQueue.WEBHOOKS_DELETE: (WebhookIdRequest, None),
    RpcQueue.WEBHOOKS_ROTATE_SECRET: (WebhookIdRequest, IssuedWebhook),
    RpcQueue.WEBHOOKS_TEST: (WebhookIdRequest, WebhookAttemptView),
    RpcQueue.WEBHOOKS_LIST_DEAD_LETTERS: (ListDeadLettersRequest, list[WebhookMessageView]),
    RpcQueue.WEBHOOKS_REPLAY: (ReplayWebhookMessageRequest, WebhookMessageView),
    RpcQueue.SUBSCRIPTIONS_CREATE: (CreateSubscriptionRequest, IssuedSubscription),
    RpcQueue.SUBSCRIPTIONS_LIST: (ListSubscriptionsRequest, list[SubscriptionView]),
    RpcQueue.SUBSCRIPTIONS_GET: (SubscriptionIdRequest, SubscriptionView),
    RpcQueue.SUBSCRIPTIONS_DELETE: (SubscriptionIdRequest, None),
}
"""Each request queue's request model and the ``result`` of its ``ok`` replies (None: none).

The contracts name the queues and the models but not which goes with which: the owning
services pair them when they register their answers. Until an operation descriptor in the
contracts does, this table says it, and ``tests/unit/test_asyncapi.py`` checks it against
what every service registers (request model and the answer's return type).
"""

_DESCRIPTION = f"""\
Every event, command and request/reply message of the HyperSDK platform on RabbitMQ, generated
from the contract models (`hypersdk_contracts`, docs/contracts.md).

**Events** travel on the durable topic exchange `{EVENTS_EXCHANGE}`, one channel per routing key
`<service>.<entity>.<verb>`; only the service the routing key starts with emits it. Each is a
CloudEvents 1.0 envelope in structured mode: AMQP `content_type` `{CLOUDEVENTS_CONTENT_TYPE}`,
the body the JSON envelope, its `type` `{EVENT_TYPE_PREFIX}` plus the routing key; the AMQP
`message_id` is the event id, the AMQP `type` the CloudEvents type, `user_id` the publisher's
broker login (RabbitMQ refuses any other), the `traceparent` header the envelope's trace
context. Messages are persistent and published with confirms. The gateway's events may also
travel several to a message in the CloudEvents JSON batch format
(`{CLOUDEVENTS_BATCH_CONTENT_TYPE}`, a JSON array of envelopes of one type): a subscriber
branches on the content type and treats each envelope as its own event. Event ids are unique;
delivery is at least once, so subscribers de-duplicate on them.

**External subscribers** never see `{EVENTS_EXCHANGE}`. The webhooks service forwards every
genuine event, as its envelope without the internal `seal`, to the topic exchange
`{PUBLIC_EXCHANGE}` under the same routing key; each AMQP subscription (created through
`POST /api/v1/subscriptions`) has a RabbitMQ user of its own that may only bind queues named
`sub.<id>.*` to its tap exchange `sub.<id>` (bound to `{PUBLIC_EXCHANGE}` with `#`) and consume
from them (docs/webhooks.md).

**Commands** that need a worker go to durable work queues (`{EXPORT_JOBS_QUEUE}`) in the same
envelope, through the default exchange.

**Questions** use RabbitMQ request/reply on `<service>.rpc.<operation>` queues: the request is
plain JSON (`{JSON_CONTENT_TYPE}`, a request model carrying its caller's `context`) with the AMQP
properties `correlation_id`, `reply_to` (direct reply-to, `{DIRECT_REPLY_TO}`) and an
`expiration` of the requester's timeout; the reply, sent to `reply_to` with the same
`correlation_id`, is an `RpcReply`: `ok` with a `result`, or an `error`.
"""


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the bus: the same JSON on every call."""
    schemas, refs = _schemas()
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    _add_events(refs, schemas=schemas, messages=messages, channels=channels, ops=operations)
    _add_commands(refs, schemas=schemas, messages=messages, channels=channels, ops=operations)
    _add_requests(refs, messages=messages, channels=channels, ops=operations)
    _add_public(channels=channels, ops=operations)
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "HyperSDK message bus",
            "version": version("hypersdk-contracts"),
            "description": _DESCRIPTION,
        },
        "defaultContentType": CLOUDEVENTS_CONTENT_TYPE,
        "servers": {"rabbitmq": _SERVER},
        "channels": _sorted(channels),
        "operations": _sorted(operations),
        "components": {
            "schemas": _sorted(schemas),
            "messages": _sorted(messages),
            "securitySchemes": {"brokerLogin": _BROKER_LOGIN},
        },
    }
    # Nothing in it is shared with this module or between its parts: a caller may change it.
    return copy.deepcopy(document)


_SERVER: dict[str, Any] = {
    "host": "{host}:{port}",
    "pathname": f"/{VHOST}",
    "protocol": "amqp",
    "protocolVersion": "0.9.1",
    "title": "RabbitMQ",
    "description": f"The platform's broker; the path is the virtual host `{VHOST}`.",
    "variables": {
        "host": {"default": "localhost", "description": "The broker's host name."},
        "port": {
            "default": "5672",
            "enum": ["5671", "5672"],
            "description": "5671 where the broker speaks TLS (amqps, as in production), 5672 "
            "for plain AMQP.",
        },
    },
    "security": [{"$ref": "#/components/securitySchemes/brokerLogin"}],
}
_BROKER_LOGIN = {
    "type": "userPassword",
    "description": "Every process logs in as its own least-privilege RabbitMQ user; the broker "
    "checks each message's `user_id` against that login.",
}
_TRACE_HEADERS_SCHEMA = {
    "type": "object",
    "title": TRACE_HEADERS,
    "description": "AMQP headers: the message's W3C trace context.",
    "properties": {
        "traceparent": {
            "type": "string",
            "pattern": TRACEPARENT_PATTERN,
            "description": "W3C traceparent (version 00) of this hop.",
        }
    },
}
_CORRELATION = {
    "location": "$message.header#/correlation_id",
    "description": "The AMQP correlation_id of the request; its reply carries the same.",
}
_REPLY_ADDRESS = {
    "location": "$message.header#/reply_to",
    "description": f"The AMQP reply_to of the request (RabbitMQ direct reply-to, "
    f"`{DIRECT_REPLY_TO}`); the reply goes there through the default exchange.",
}


def _schemas() -> tuple[dict[str, Any], dict[Any, dict[str, Any]]]:
    """Every model's JSON Schema in one namespace, and a ``$ref`` to each model's."""
    models: set[type[BaseModel]] = {CloudEvent, RpcReply, *EVENT_TYPES.values()}
    for commands in WORK_QUEUES.values():
        models.update(commands)
    for request, result in RPC_ANSWERS.values():
        models.add(request)
        models.update(_result_models(result))
    ordered = sorted(models, key=lambda model: (model.__module__, model.__qualname__))
    mode: JsonSchemaMode = "validation"
    by_model, top = models_json_schema(
        [(model, mode) for model in ordered], ref_template=SCHEMAS + "{model}"
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    _add_schema(schemas, TRACE_HEADERS, _TRACE_HEADERS_SCHEMA)
    return schemas, {model: ref for (model, _), ref in by_model.items()}


def _result_models(result: Any) -> Iterable[type[BaseModel]]:
    if result is None:
        return ()
    if get_origin(result) is list:
        return get_args(result)
    return (result,)


def _add_schema(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if name in schemas:
        raise ValueError(f"two schemas named {name}")
    schemas[name] = schema


def _add_events(
    refs: Mapping[Any, dict[str, Any]],
    *,
    schemas: dict[str, Any],
    messages: dict[str, Any],
    channels: dict[str, Any],
    ops: dict[str, Any],
) -> None:
    """A channel on the events exchange per routing key, its messages, its emitter's send."""
    for routing_key in sorted(EVENT_TYPES):
        model = EVENT_TYPES[routing_key]
        emitter = emitter_of(routing_key)
        envelope = f"{routing_key}.envelope"
        _add_schema(
            schemas,
            envelope,
            _envelope_schema(
                refs,
                event_type=EVENT_TYPE_PREFIX + routing_key,
                source=None if emitter is None else source_of(emitter),
                data=refs[model],
                title=f"{model.__name__}Envelope",
            ),
        )
        summary, description = _docstring(model)
        message = _envelope_message(routing_key, model, envelope=envelope)
        message["x-audit-action"] = model.audit_action
        messages[routing_key] = message
        channel_messages = [routing_key]
        if emitter in BATCHING_EMITTERS:
            messages[f"{routing_key}.batch"] = _batch_message(routing_key, model, envelope)
            channel_messages.append(f"{routing_key}.batch")
        channels[routing_key] = {
            "address": routing_key,
            "title": model.__name__,
            "summary": summary,
            **({"description": description} if description else {}),
            "messages": {name: {"$ref": MESSAGES + name} for name in channel_messages},
            "bindings": {"amqp": _exchange_binding()},
        }
        if emitter is not None:
            ops[f"{routing_key}.send"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{routing_key}"},
                "messages": [
                    {"$ref": f"#/channels/{routing_key}/messages/{name}"}
                    for name in channel_messages
                ],
                "title": f"{emitter} publishes {routing_key}",
                "summary": summary,
                "tags": [{"name": emitter}],
                "bindings": {"amqp": _publish_binding(mandatory=False)},
            }


PUBLIC_CHANNEL = "public.events"
"""The channel of an AMQP subscription's tap: every public event, for external subscribers."""


def _add_public(*, channels: dict[str, Any], ops: dict[str, Any]) -> None:
    """An AMQP subscriber's tap (``sub.{subscription_id}``) and what it receives there."""
    names = sorted(EVENT_TYPES)
    channels[PUBLIC_CHANNEL] = {
        "address": "sub.{subscription_id}",
        "title": "An AMQP subscription's tap",
        "summary": f"Every genuine event, forwarded to `{PUBLIC_EXCHANGE}` without its seal.",
        "description": "A durable internal topic exchange bound to "
        f"`{PUBLIC_EXCHANGE}` with `#`. The subscription's user binds its own queues "
        "(`sub.{subscription_id}.<name>`) to it with routing-key patterns and consumes "
        "them; it may do nothing else (docs/webhooks.md).",
        "parameters": {
            "subscription_id": {"description": "Id of the subscription (sb_ and 24 hex)."}
        },
        "messages": {name: {"$ref": MESSAGES + name} for name in names},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": "sub.{subscription_id}",
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                    "vhost": VHOST,
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }
    ops[f"{PUBLIC_CHANNEL}.receive"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{PUBLIC_CHANNEL}"},
        "messages": [{"$ref": f"#/channels/{PUBLIC_CHANNEL}/messages/{name}"} for name in names],
        "title": "An external subscriber reads its queues",
        "summary": "At least once, deduplicate on the event id.",
        "tags": [{"name": "subscriber"}],
    }


def _add_commands(
    refs: Mapping[Any, dict[str, Any]],
    *,
    schemas: dict[str, Any],
    messages: dict[str, Any],
    channels: dict[str, Any],
    ops: dict[str, Any],
) -> None:
    """A channel per work queue with its commands; who sends them, the workers that take them."""
    for queue in sorted(WORK_QUEUES):
        commands = sorted(WORK_QUEUES[queue], key=_command_type)
        worker = queue.split(".", 1)[0]
        for model in commands:
            command_type = _command_type(model)
            envelope = f"{command_type}.envelope"
            _add_schema(
                schemas,
                envelope,
                _envelope_schema(
                    refs,
                    event_type=EVENT_TYPE_PREFIX + command_type,
                    source=source_of(_sender(model)),
                    data=refs[model],
                    title=f"{model.__name__}Envelope",
                ),
            )
            messages[command_type] = _envelope_message(command_type, model, envelope=envelope)
        names = [_command_type(model) for model in commands]
        channels[queue] = {
            "address": queue,
            "title": queue,
            "summary": f"Work queue of {', '.join(names)}: workers compete for its commands.",
            "description": "A durable quorum queue, reached through the default exchange; a "
            "command is acked once its effect is durable, dead-lettered (to "
            f"`{queue}.dlq` through `hypersdk.dlx`) when it can never run.",
            "messages": {name: {"$ref": MESSAGES + name} for name in names},
            "bindings": {"amqp": _queue_binding(queue)},
        }
        in_channel = [{"$ref": f"#/channels/{queue}/messages/{name}"} for name in names]
        senders = sorted({_sender(model) for model in commands})
        for sender in senders:
            sent = [_command_type(model) for model in commands if _sender(model) == sender]
            ops[f"{queue}.send" if len(senders) == 1 else f"{queue}.send.{sender}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{queue}"},
                "messages": [{"$ref": f"#/channels/{queue}/messages/{name}"} for name in sent],
                "title": f"{sender} queues commands on {queue}",
                "tags": [{"name": sender}],
                "bindings": {"amqp": _publish_binding(mandatory=True)},
            }
        ops[f"{queue}.receive"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{queue}"},
            "messages": in_channel,
            "title": f"{worker} workers take commands from {queue}",
            "tags": [{"name": worker}],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }


def _add_requests(
    refs: Mapping[Any, dict[str, Any]],
    *,
    messages: dict[str, Any],
    channels: dict[str, Any],
    ops: dict[str, Any],
) -> None:
    """A channel per request queue, the replies channel, and each owner's receive with reply."""
    replies: dict[str, Any] = {}
    for queue in sorted(RpcQueue, key=str):
        request, result = RPC_ANSWERS[queue]
        owner = queue.split(".", 1)[0]
        summary, description = _docstring(request)
        request_name, reply_name = f"{queue}.request", f"{queue}.reply"
        messages[request_name] = {
            "name": request_name,
            "title": request.__name__,
            "summary": summary,
            **({"description": description} if description else {}),
            "contentType": JSON_CONTENT_TYPE,
            "headers": {"$ref": SCHEMAS + TRACE_HEADERS},
            "payload": dict(refs[request]),
            "correlationId": dict(_CORRELATION),
        }
        messages[reply_name] = {
            "name": reply_name,
            "title": f"Reply to {request.__name__}",
            "summary": f"The answer of {queue}: {_result_text(result)}, or an error.",
            "contentType": JSON_CONTENT_TYPE,
            "payload": {
                "allOf": [
                    dict(refs[RpcReply]),
                    {"type": "object", "properties": {"result": _result_schema(refs, result)}},
                ]
            },
            "correlationId": dict(_CORRELATION),
        }
        replies[reply_name] = {"$ref": MESSAGES + reply_name}
        channels[queue] = {
            "address": queue,
            "title": queue,
            "summary": summary,
            "messages": {request_name: {"$ref": MESSAGES + request_name}},
            "bindings": {"amqp": _queue_binding(queue)},
        }
        ops[f"{queue}.receive"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{queue}"},
            "messages": [{"$ref": f"#/channels/{queue}/messages/{request_name}"}],
            "reply": {
                "address": dict(_REPLY_ADDRESS),
                "channel": {"$ref": f"#/channels/{REPLIES_CHANNEL}"},
                "messages": [{"$ref": f"#/channels/{REPLIES_CHANNEL}/messages/{reply_name}"}],
            },
            "title": f"{owner} answers {queue}",
            "summary": summary,
            "tags": [{"name": owner}],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }
    channels[REPLIES_CHANNEL] = {
        "address": None,
        "title": "Replies",
        "summary": "Replies to requests, each sent to the reply_to address of its request.",
        "description": f"RabbitMQ direct reply-to: a requester consumes `{DIRECT_REPLY_TO}` and "
        "names it as the reply_to of its requests; a request expires with the requester's "
        "timeout, so a stale question is never answered late.",
        "messages": replies,
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {"name": DIRECT_REPLY_TO, "vhost": VHOST},
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _envelope_schema(
    refs: Mapping[Any, dict[str, Any]],
    *,
    event_type: str,
    source: str | None,
    data: dict[str, Any],
    title: str,
) -> dict[str, Any]:
    """The envelope with its ``type`` (and ``source``, if known) fixed and ``data`` typed."""
    properties: dict[str, Any] = {"type": {"const": event_type}, "data": dict(data)}
    if source is not None:
        properties["source"] = {"const": source}
    return {
        "title": title,
        "description": f"The CloudEvents envelope of {event_type}.",
        "allOf": [
            dict(refs[CloudEvent]),
            {"type": "object", "properties": properties, "required": sorted(properties)},
        ],
    }


def _envelope_message(name: str, model: type[BaseModel], *, envelope: str) -> dict[str, Any]:
    summary, description = _docstring(model)
    return {
        "name": name,
        "title": model.__name__,
        "summary": summary,
        **({"description": description} if description else {}),
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "headers": {"$ref": SCHEMAS + TRACE_HEADERS},
        "payload": {"$ref": SCHEMAS + envelope},
        "bindings": {"amqp": _message_binding(EVENT_TYPE_PREFIX + name)},
    }


def _batch_message(routing_key: str, model: type[BaseModel], envelope: str) -> dict[str, Any]:
    return {
        "name": f"{routing_key}.batch",
        "title": f"{model.__name__}Batch",
        "summary": f"Several {routing_key} events in one message (CloudEvents JSON batch format).",
        "description": "A JSON array of envelopes, all of this type; the AMQP message_id is "
        "`batch-` plus the first event's id, and there is no traceparent header (each envelope "
        "carries its own).",
        "contentType": CLOUDEVENTS_BATCH_CONTENT_TYPE,
        "payload": {"type": "array", "minItems": 1, "items": {"$ref": SCHEMAS + envelope}},
        "bindings": {"amqp": _message_binding(EVENT_TYPE_PREFIX + routing_key)},
    }


def _result_schema(refs: Mapping[Any, dict[str, Any]], result: Any) -> dict[str, Any]:
    """``result`` of a reply: the answer when ``ok``, null on an error (and for no answer)."""
    if result is None:
        return {"type": "null"}
    if get_origin(result) is list:
        (item,) = get_args(result)
        answer = {"type": "array", "items": dict(refs[item])}
    else:
        answer = dict(refs[result])
    return {"anyOf": [answer, {"type": "null"}]}


def _result_text(result: Any) -> str:
    if result is None:
        return "no result"
    if get_origin(result) is list:
        (item,) = get_args(result)
        return f"a list of {item.__name__}"
    return str(result.__name__)


def _docstring(model: type) -> tuple[str, str]:
    """The first paragraph of a model's docstring on one line, and the rest."""
    doc = inspect.getdoc(model) or model.__name__
    first, _, rest = doc.partition("\n\n")
    return " ".join(first.split()), rest.strip()


def _command_type(model: type[Message]) -> str:
    command_type: str = getattr(model, "command_type")  # noqa: B009 - ClassVar on commands
    return command_type


def _sender(model: type[Message]) -> str:
    """The service that sends a command: the first part of its type (as the kit's send_command)."""
    return _command_type(model).split(".", 1)[0]


def _exchange_binding() -> dict[str, Any]:
    return {
        "is": "routingKey",
        "exchange": {
            "name": EVENTS_EXCHANGE,
            "type": "topic",
            "durable": True,
            "autoDelete": False,
            "vhost": VHOST,
        },
        "bindingVersion": AMQP_BINDING_VERSION,
    }


def _queue_binding(queue: str) -> dict[str, Any]:
    """A durable queue the platform declares (or provisions), shared by its consumers."""
    return {
        "is": "queue",
        "queue": {
            "name": queue,
            "durable": True,
            "exclusive": False,
            "autoDelete": False,
            "vhost": VHOST,
        },
        "bindingVersion": AMQP_BINDING_VERSION,
    }


def _publish_binding(*, mandatory: bool) -> dict[str, Any]:
    return {
        "deliveryMode": PERSISTENT,
        "mandatory": mandatory,
        "bindingVersion": AMQP_BINDING_VERSION,
    }


def _message_binding(message_type: str) -> dict[str, Any]:
    return {"messageType": message_type, "bindingVersion": AMQP_BINDING_VERSION}


def _sorted(items: Mapping[str, Any]) -> dict[str, Any]:
    return {key: items[key] for key in sorted(items)}


def main(argv: Sequence[str] | None = None) -> int:
    """Write the document as JSON (sorted keys, indented) to stdout or ``--output``."""
    parser = argparse.ArgumentParser(
        prog="python -m hypersdk_contracts.asyncapi",
        description="Write the AsyncAPI 3.0.0 document of the HyperSDK bus.",
    )
    parser.add_argument("--output", type=Path, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    text = json.dumps(asyncapi_document(), sort_keys=True, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
