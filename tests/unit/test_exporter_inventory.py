"""Exporter inventory and provider updates: sessions, paging across providers, PUT semantics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_exporter.adapters.inbound.bus import vm_view
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
from hypersdk_exporter.core.models import Firmware
from hypersdk_exporter.core.service import ExporterService
from hypersdk_kit.memory import InMemoryUnitOfWork

CONTEXT = RequestContext(actor="olga", source_ip="192.0.2.20", request_id="req-inventory-1")


@dataclass
class World:
    service: ExporterService
    providers: InMemoryProviderStore
    events: InMemoryUnitOfWork
    resolver: InMemoryCredentialResolver
    lab: Path


@pytest.fixture
def world(tmp_path: Path) -> World:
    lab = tmp_path / "lab"
    for directory, names in {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"], "c": []}.items():
        (lab / directory).mkdir(parents=True)
        for index, name in enumerate(names):
            write_demo_vm(lab / directory, name=name, size_mib=1, seed=index)
    providers = InMemoryProviderStore()
    jobs = InMemoryJobStore()
    events = InMemoryUnitOfWork(service="exporter", stores=(providers, jobs))
    resolver = InMemoryCredentialResolver(
        {"providers/a": {"username": "u", "password": "p"}, "providers/b": {"token": "t"}}
    )
    service = ExporterService(
        providers=providers,
        jobs=jobs,
        drivers={"local": LocalLabDriver(lab)},
        converter=InMemoryConverter(),
        writer=LocalArtifactWriter(),
        queue=InMemoryJobQueue(),
        credentials=InMemoryCredentialDirectory({"providers/a", "providers/b"}),
        resolver=resolver,
        uow=events,
        export_dir=tmp_path / "exports",
    )
    return World(service, providers, events, resolver, lab)


async def _register(world: World, name: str, directory: str, ref: str | None = None) -> None:
    await world.service.register_provider(
        name=name,
        type="local",
        config={"directory": directory},
        credential_ref=ref,
        context=CONTEXT,
    )


# ---- PUT /providers/{name} ----------------------------------------------------------------------


async def test_update_replaces_settings_and_records_the_reference(world: World) -> None:
    await _register(world, "lab", "a")
    created = world.providers.providers["lab"].created_at

    updated = await world.service.update_provider(
        name="lab",
        type="local",
        config={"directory": "b"},
        credential_ref="providers/b",
        context=CONTEXT,
    )

    assert (updated.config, updated.credential_ref, updated.created_at) == (
        {"directory": "b"},
        "providers/b",
        created,
    )
    assert world.providers.providers["lab"] == updated
    event = world.events.events[-1]
    assert event.routing_key == "exporter.provider.updated"
    assert event.data == {"name": "lab", "type": "local", "credential_ref": "providers/b"}
    assert (event.subject, event.actor) == ("provider/lab", "olga")
    page = await world.service.list_vms("lab", context=CONTEXT)
    assert [vm.name for _, vm in page.items] == ["b1", "b2"]


@pytest.mark.parametrize(
    ("name", "provider_type", "config", "ref", "code"),
    [
        pytest.param("nope", "local", {"directory": "b"}, None, ErrorCode.NOT_FOUND, id="unknown"),
        pytest.param(
            "lab", "vmware", {"directory": "b"}, None, ErrorCode.VALIDATION_FAILED, id="t"
        ),
        pytest.param("lab", "local", {"directory": "../x"}, None, ErrorCode.VALIDATION_FAILED),
        pytest.param("lab", "local", {"dir": "b"}, None, ErrorCode.VALIDATION_FAILED, id="key"),
        pytest.param(
            "lab", "local", {"directory": "b"}, "providers/x", ErrorCode.VALIDATION_FAILED, id="ref"
        ),
    ],
)
async def test_update_refuses_and_changes_nothing(
    world: World,
    *,
    name: str,
    provider_type: str,
    config: dict[str, str],
    ref: str | None,
    code: ErrorCode,
) -> None:
    await _register(world, "lab", "a")
    before = dict(world.providers.providers)
    count = len(world.events.events)

    with pytest.raises(ServiceError) as error:
        await world.service.update_provider(
            name=name, type=provider_type, config=config, credential_ref=ref, context=CONTEXT
        )

    assert error.value.code is code
    assert world.providers.providers == before
    assert len(world.events.events) == count


async def test_an_update_whose_event_cannot_commit_changes_nothing(world: World) -> None:
    await _register(world, "lab", "a")
    before = world.providers.providers["lab"]
    world.events.fail_commits = {"exporter.provider.updated"}

    with pytest.raises(InMemoryUnitOfWork.CommitFailedError):
        await world.service.update_provider(
            name="lab",
            type="local",
            config={"directory": "b"},
            credential_ref=None,
            context=CONTEXT,
        )

    assert world.providers.providers["lab"] == before


# ---- inventory ----------------------------------------------------------------------------------


async def test_listing_every_provider_pages_across_them(world: World) -> None:
    await _register(world, "pa", "a")
    await _register(world, "pb", "b")
    await _register(world, "pc", "c")

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = await world.service.list_vms(page_token=token, limit=2, context=CONTEXT)
        assert len(page.items) <= 2
        seen.extend(f"{provider.name}/{vm.id}" for provider, vm in page.items)
        pages += 1
        token = page.next_token
        if token is None:
            break
        assert pages < 10

    assert seen == ["pa/a1", "pa/a2", "pa/a3", "pb/b1", "pb/b2"]


async def test_one_providers_listing_pages_by_name(world: World) -> None:
    await _register(world, "pa", "a")

    first = await world.service.list_vms("pa", limit=2, context=CONTEXT)
    second = await world.service.list_vms(
        "pa", page_token=first.next_token, limit=2, context=CONTEXT
    )

    assert [vm.name for _, vm in first.items] == ["a1", "a2"]
    assert [vm.name for _, vm in second.items] == ["a3"]
    assert second.next_token is None


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", "W10", "WzEsMl0", "x" * 3000])
async def test_a_forged_inventory_token_is_refused(world: World, token: str) -> None:
    await _register(world, "pa", "a")

    with pytest.raises(ServiceError) as error:
        await world.service.list_vms(page_token=token, limit=2, context=CONTEXT)

    assert error.value.code is ErrorCode.VALIDATION_FAILED


async def test_a_token_of_another_provider_is_refused(world: World) -> None:
    await _register(world, "pa", "a")
    await _register(world, "pb", "b")
    page = await world.service.list_vms(limit=4, context=CONTEXT)
    assert page.next_token is not None  # stopped inside pb

    with pytest.raises(ServiceError) as error:
        await world.service.list_vms("pa", page_token=page.next_token, limit=2, context=CONTEXT)

    assert error.value.code is ErrorCode.VALIDATION_FAILED


@pytest.mark.parametrize("limit", [0, -1, 501])
async def test_a_limit_out_of_range_is_refused(world: World, limit: int) -> None:
    with pytest.raises(ServiceError) as error:
        await world.service.list_vms(limit=limit, context=CONTEXT)
    assert error.value.code is ErrorCode.VALIDATION_FAILED


async def test_describe_vm_reads_one_vm_and_its_hardware(world: World) -> None:
    await _register(world, "pa", "a")
    spec = json.loads((world.lab / "a" / "a2" / "vm.json").read_text())
    spec |= {
        "firmware": "efi",
        "nics": [{"network": "lan", "mac": "52:54:00:00:00:01", "model": "e1000"}],
    }
    (world.lab / "a" / "a2" / "vm.json").write_text(json.dumps(spec))

    provider, vm = await world.service.describe_vm("pa", "a2", CONTEXT)

    assert (provider.name, vm.id, vm.name, vm.firmware) == ("pa", "a2", "a2", Firmware.EFI)
    (disk,) = vm.disks
    assert (disk.key, disk.name, disk.format, disk.capacity_bytes) == (
        "disk0",
        "disk0",
        "raw",
        1 << 20,
    )
    view = vm_view(provider, vm)
    assert view.id == "pa/a2"
    assert view.detailed
    assert view.firmware == "efi"
    assert [(n.network, n.mac, n.model) for n in view.nics] == [
        ("lan", "52:54:00:00:00:01", "e1000")
    ]
    assert view.disks[0].controller == "virtio"


@pytest.mark.parametrize("vm_id", ["nope", "..", ".", "a2/../a1", "", "a2/vm.json"])
async def test_describe_an_unknown_vm_is_not_found(world: World, vm_id: str) -> None:
    await _register(world, "pa", "a")

    with pytest.raises(ServiceError) as error:
        await world.service.describe_vm("pa", vm_id, CONTEXT)

    assert error.value.code is ErrorCode.NOT_FOUND


async def test_a_session_resolves_the_providers_credential_for_the_caller(world: World) -> None:
    await _register(world, "pa", "a", ref="providers/a")
    await _register(world, "pb", "b")

    await world.service.describe_vm("pa", "a1", CONTEXT)
    await world.service.describe_vm("pb", "b1", CONTEXT)

    assert world.resolver.resolved == [("providers/a", "olga")]
