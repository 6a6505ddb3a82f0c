"""Rotation: a new version at once, the previous one readable for the grace, then destroyed;
reads by services are events. Events never carry a value."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_secrets.adapters.outbound.memory import InMemorySecretManager
from hypersdk_secrets.core.service import SecretsService

PATH = "providers/vcenter"
OLD, NEW = "old-value-planted", "new-value-planted"
CONTEXT = RequestContext(actor="olga", request_id="req-1")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _world() -> tuple[SecretsService, InMemorySecretManager, InMemoryUnitOfWork, Clock]:
    manager, events, clock = InMemorySecretManager(), InMemoryUnitOfWork(service="secrets"), Clock()
    service = SecretsService(
        manager=manager, events=events, rotation_grace=timedelta(hours=1), clock=clock
    )
    return service, manager, events, clock


async def test_a_rotation_keeps_the_previous_version_for_the_grace_then_destroys_it() -> None:
    service, manager, events, clock = _world()
    await service.put(PATH, {"password": OLD}, CONTEXT)

    rotation = await service.rotate(PATH, {"password": NEW}, CONTEXT)

    assert (rotation.version, rotation.previous_version) == (2, 1)
    assert rotation.previous_readable_until == clock.now + timedelta(hours=1)
    assert (await service.resolve_credential(PATH)).data == {"password": NEW}  # at once
    previous = await manager.read(PATH, 1)
    assert previous is not None
    assert previous.data == {"password": OLD}
    assert await service.sweep() == []  # within the grace: kept

    clock.now += timedelta(hours=1, seconds=1)
    assert await service.sweep() == [(PATH, 1)]
    assert await manager.read(PATH, 1) is None
    assert (await service.resolve_credential(PATH)).data == {"password": NEW}
    assert await service.sweep() == []
    kinds = [e.type for e in events.events]
    assert kinds.count("io.hypersdk.secrets.secret.rotated") == 1
    assert kinds.count("io.hypersdk.secrets.secret.version_destroyed") == 1
    published = json.dumps([e.model_dump(mode="json") for e in events.events])
    assert OLD not in published
    assert NEW not in published


async def test_every_read_by_a_service_is_an_event_naming_the_reader() -> None:
    service, _, events, _ = _world()
    await service.put(PATH, {"password": OLD}, CONTEXT)
    await service.resolve_credential(PATH, reader="hypersdk-exporter", context=CONTEXT)
    read = events.events[-1]
    assert read.type == "io.hypersdk.secrets.secret.read"
    assert read.data == {"path": PATH, "version": 1, "reader": "hypersdk-exporter"}
    assert OLD not in read.model_dump_json()


async def test_only_an_existing_secret_rotates_and_a_write_meanwhile_is_a_conflict() -> None:
    service, manager, _, _ = _world()
    with pytest.raises(ServiceError) as missing:
        await service.rotate(PATH, {"password": NEW}, CONTEXT)
    assert missing.value.code is ErrorCode.NOT_FOUND
    await service.put(PATH, {"password": OLD}, CONTEXT)
    with pytest.raises(ServiceError) as bad:
        await service.rotate(PATH, {}, CONTEXT)
    assert bad.value.code is ErrorCode.VALIDATION_FAILED
    with pytest.raises(ServiceError) as conflict:
        await manager.put(PATH, {"password": NEW}, cas=0)  # as if written meanwhile
    assert conflict.value.code is ErrorCode.CONFLICT
