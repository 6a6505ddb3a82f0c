"""Provider credentials: read per session by the exporter alone, never seen anywhere else.

A credential value is planted in the secrets fake; a provider uses it through browsing,
describing, exporting and failing drivers; then every event, log record, response, job record
and error is searched for it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import ClassVar

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import SecretsRequestRejected
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.adapters.inbound.bus import job_view, provider_view, vm_view
from hypersdk_exporter.adapters.outbound.artifacts import LocalArtifactWriter
from hypersdk_exporter.adapters.outbound.local_lab import LocalLabDriver, write_demo_vm
from hypersdk_exporter.adapters.outbound.memory import (
    InMemoryConverter,
    InMemoryCredentialDirectory,
    InMemoryCredentialResolver,
    InMemoryJobQueue,
    InMemoryJobStore,
    InMemoryProviderStore,
)
from hypersdk_exporter.core.models import Credential, Provider
from hypersdk_exporter.core.service import ExporterService
from hypersdk_exporter.ports.outbound import ProviderSession
from hypersdk_kit.guard import REFUSED, RequestGuard
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_secrets.adapters.inbound.rpc import CredentialReaders
from hypersdk_secrets.adapters.outbound.memory import InMemorySecretManager
from hypersdk_secrets.core.service import SecretsService

PLANTED = "planted-hypervisor-password-9d41c7"
REF = "providers/kvm"
CONTEXT = RequestContext(actor="olga", source_ip="192.0.2.20", request_id="req-cred-1")


class SecretSeeingDriver(LocalLabDriver):
    """The local lab, plus: records the credential, and fails the way a careless library does."""

    type: ClassVar[str] = "local"

    def __init__(self, lab_root: Path) -> None:
        super().__init__(lab_root)
        self.seen: list[Credential | None] = []
        self.explode = False

    async def connect(self, provider: Provider, credential: Credential | None) -> ProviderSession:
        self.seen.append(credential)
        if self.explode and credential is not None:
            password = credential.get("password")
            raise RuntimeError(f"login as root with password {password} refused")
        return await super().connect(provider, credential)


@pytest.fixture
def world(tmp_path: Path) -> tuple[ExporterService, SecretSeeingDriver, InMemoryUnitOfWork]:
    lab = tmp_path / "lab"
    (lab / "demo").mkdir(parents=True)
    write_demo_vm(lab / "demo", name="web-01", size_mib=1, seed=1)
    providers, jobs = InMemoryProviderStore(), InMemoryJobStore()
    events = InMemoryUnitOfWork(service="exporter", stores=(providers, jobs))
    driver = SecretSeeingDriver(lab)
    service = ExporterService(
        providers=providers,
        jobs=jobs,
        drivers={"local": driver},
        converter=InMemoryConverter(),
        writer=LocalArtifactWriter(),
        queue=InMemoryJobQueue(),
        credentials=InMemoryCredentialDirectory({REF}),
        resolver=InMemoryCredentialResolver({REF: {"username": "root", "password": PLANTED}}),
        uow=events,
        export_dir=tmp_path / "exports",
    )
    return service, driver, events


async def test_a_planted_credential_reaches_the_driver_and_nothing_else(
    world: tuple[ExporterService, SecretSeeingDriver, InMemoryUnitOfWork],
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, driver, events = world
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    provider = await service.register_provider(
        name="kvm", type="local", config={"directory": "demo"}, credential_ref=REF, context=CONTEXT
    )
    seen.append(provider_view(provider).model_dump_json())
    page = await service.list_vms("kvm", context=CONTEXT)
    seen += [vm_view(p, vm).model_dump_json() for p, vm in page.items]
    owner, vm = await service.describe_vm("kvm", "web-01", CONTEXT)
    seen.append(vm_view(owner, vm).model_dump_json())
    job = await service.create_export(
        provider="kvm", vm="web-01", format=DiskFormat.RAW, context=CONTEXT
    )
    command = service._queue.commands[-1]  # type: ignore[attr-defined]
    seen.append(command.model_dump_json())
    done = await service.run_export(command, CONTEXT)
    assert done.status is JobStatus.SUCCEEDED
    seen.append(job_view(done).model_dump_json())
    seen.append(repr(done))
    updated = await service.update_provider(
        name="kvm", type="local", config={"directory": "demo"}, credential_ref=REF, context=CONTEXT
    )
    seen.append(repr(updated))

    driver.explode = True
    with pytest.raises(ServiceError) as error:
        await service.describe_vm("kvm", "web-01", CONTEXT)
    assert error.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    seen += [str(error.value), repr(error.value), json.dumps(error.value.body().model_dump())]
    assert error.value.__cause__ is None  # the library's message is not chained either
    assert error.value.__suppress_context__
    seen.append(repr(driver.seen))

    # The driver did get the value, once per session.
    assert all(c is not None and c.get("password") == PLANTED for c in driver.seen)
    assert len(driver.seen) >= 5
    seen += [json.dumps(event.to_wire(), default=str) for event in events.events]
    seen += [
        record.getMessage() + " " + json.dumps(record.__dict__, default=str)
        for record in caplog.records
    ]
    assert events.events  # there was something to search
    for text in seen:
        assert PLANTED not in text
    assert job.id in "".join(seen)  # the search does see what was produced


async def test_a_credential_gone_from_the_secrets_service_is_a_conflict(
    world: tuple[ExporterService, SecretSeeingDriver, InMemoryUnitOfWork],
) -> None:
    service, _, _ = world
    await service.register_provider(
        name="kvm", type="local", config={"directory": "demo"}, credential_ref=REF, context=CONTEXT
    )
    service._resolver = InMemoryCredentialResolver({})  # deleted since registration

    with pytest.raises(ServiceError) as error:
        await service.describe_vm("kvm", "web-01", CONTEXT)

    assert error.value.code is ErrorCode.CONFLICT


async def test_a_credential_outside_providers_is_refused_at_registration(
    world: tuple[ExporterService, SecretSeeingDriver, InMemoryUnitOfWork],
) -> None:
    service, _, events = world

    with pytest.raises(ServiceError) as error:
        await service.register_provider(
            name="kvm",
            type="local",
            config={"directory": "demo"},
            credential_ref="gateway/signing",
            context=CONTEXT,
        )

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert events.events == []


# ---- the secrets side ---------------------------------------------------------------------------


async def test_secrets_resolves_only_provider_credentials() -> None:
    manager = InMemorySecretManager()
    await manager.put(REF, {"password": PLANTED})
    await manager.put("gateway/admin", {"password": "other"})
    secrets = SecretsService(manager=manager, events=InMemoryUnitOfWork(service="secrets"))

    value = await secrets.resolve_credential(REF)

    assert value.data == {"password": PLANTED}
    assert PLANTED not in repr(value)
    for path in ("gateway/admin", "providers/missing", "providersx/kvm"):
        with pytest.raises(ServiceError) as error:
            await secrets.resolve_credential(path)
        assert error.value.code is ErrorCode.NOT_FOUND


async def test_only_a_reader_login_may_ask_and_a_refusal_is_published() -> None:
    events = InMemoryUnitOfWork(service="secrets")
    guard = RequestGuard(events=events, rejected=SecretsRequestRejected)  # no keys: fail closed
    login: list[str | None] = ["hypersdk-gateway"]
    readers = CredentialReaders(
        guard=guard, readers=frozenset({"hypersdk-exporter"}), login=lambda: login[0]
    )

    for caller, reason in (
        ("hypersdk-gateway", "not_a_reader"),
        (None, "not_a_reader"),
        ("hypersdk-exporter", "no_trust_anchor"),  # a reader still needs a valid grant and seal
    ):
        login[0] = caller
        with pytest.raises(ServiceError) as error:
            await readers.authorize(
                operation="secrets.rpc.resolve_credential",
                context=CONTEXT,
                permissions=frozenset({"vms:browse"}),
                target=REF,
            )
        assert (error.value.code, error.value.message) == (ErrorCode.FORBIDDEN, REFUSED)
        assert events.events[-1].data["reason"] == reason
        assert events.events[-1].data["claimed_actor"] == "olga"


def test_the_read_is_a_follow_up_of_browsing_and_exporting_only() -> None:
    from hypersdk_contracts.names import RpcQueue
    from hypersdk_contracts.operations import EXPORT_COMMAND, FOLLOW_UPS, follows

    read = RpcQueue.SECRETS_RESOLVE_CREDENTIAL
    allowed = {
        RpcQueue.EXPORTER_LIST_VMS,
        RpcQueue.EXPORTER_GET_VM,
        RpcQueue.EXPORTER_CREATE_EXPORT,
        EXPORT_COMMAND,
    }
    assert {op for op, follow in FOLLOW_UPS.items() if read in follow} == allowed
    assert not follows(read, RpcQueue.EXPORTER_LIST_PROVIDERS)
    assert not follows(read, RpcQueue.SECRETS_PUT)
