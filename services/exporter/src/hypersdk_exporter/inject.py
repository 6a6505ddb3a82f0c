"""Composition root of the exporter service."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.events import ExporterRequestRejected
from hypersdk_exporter.adapters.inbound.bus import (
    CommandVerifier,
    register_rpc,
    register_worker,
    stale_job_sweeper,
)
from hypersdk_exporter.adapters.outbound.artifacts import LocalArtifactWriter
from hypersdk_exporter.adapters.outbound.bus import (
    RabbitJobQueue,
    RpcCredentialDirectory,
    RpcCredentialResolver,
)
from hypersdk_exporter.adapters.outbound.drivers import build_drivers
from hypersdk_exporter.adapters.outbound.postgres import (
    SCHEMA,
    PostgresJobStore,
    PostgresProviderStore,
)
from hypersdk_exporter.adapters.outbound.qemu_img import (
    QemuImgConverter,
    SandboxSettings,
    conversion_identity,
)
from hypersdk_exporter.config import ExporterSettings
from hypersdk_exporter.core.jobs import JobPolicy
from hypersdk_exporter.core.service import ExporterService
from hypersdk_exporter.ports.outbound import DiskConverter
from hypersdk_kit.bus import RabbitEventPublisher, RpcClient, build_broker
from hypersdk_kit.database import create_pool
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.outbox import build_outbox
from hypersdk_kit.ports import EnvelopePublisher
from hypersdk_kit.runtime import Component
from hypersdk_kit.transit import TrustKeys
from hypersdk_kit.trust import AssertionVerifier, load_public_key

SERVICE = "exporter"


@asynccontextmanager
async def prepare_exporter(
    settings: ExporterSettings,
    *,
    converter: DiskConverter | None = None,
    events: EnvelopePublisher | None = None,
) -> AsyncIterator[tuple[ExporterService, RabbitBroker, Sequence[Component]]]:
    """The exporter use cases wired to PostgreSQL, qemu-img and the bus (not started yet).

    Also the components to start with the broker: the relay that publishes the outbox
    (through ``events`` if given).
    """
    broker = build_broker(
        settings.amqp_url.get_secret_value(), service=SERVICE, tls=settings.amqp_tls
    )
    pool = await create_pool(
        settings.database_url.get_secret_value(), size=settings.database_pool_size
    )
    settings.export_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    sandbox = SandboxSettings(executable=settings.qemu_img, user=settings.conversion_user)
    owner = conversion_identity(settings.conversion_user)
    if owner is not None:  # as root: job directories are the conversion user's, and only its
        os.chown(settings.export_dir, *owner)
    try:
        publisher = events or RabbitEventPublisher(
            broker, service=SERVICE, declare_topology=settings.declare_topology
        )
        outbox = build_outbox(
            pool, settings=settings, schema=SCHEMA, service=SERVICE, publisher=publisher
        )
        uow = outbox.unit_of_work
        keys = TrustKeys(settings)
        policy_keys = await keys.public(
            "policy",
            file=settings.policy_public_key_file,
            transit_key=settings.policy_transit_key,
        )
        grants = AssertionVerifier(policy_keys, issuer="policy")
        rpc = RpcClient(broker, timeout_seconds=settings.rpc_timeout_seconds)
        exporter = ExporterService(
            providers=PostgresProviderStore(outbox.database),
            jobs=PostgresJobStore(outbox.database),
            drivers=build_drivers(settings),
            converter=converter or QemuImgConverter(sandbox),
            writer=LocalArtifactWriter(owner=owner),
            queue=RabbitJobQueue(broker, declare_queue=settings.declare_topology),
            credentials=RpcCredentialDirectory(rpc),
            resolver=RpcCredentialResolver(rpc),
            uow=uow,
            export_dir=settings.export_dir,
            policy=JobPolicy(
                max_attempts=settings.max_job_attempts,
                provider_concurrency=settings.provider_concurrency,
                poll_seconds=settings.job_poll_seconds,
                heartbeat_seconds=settings.job_heartbeat_seconds,
                stale_after_seconds=settings.stale_job_seconds,
                progress_interval_seconds=settings.progress_interval_seconds,
                progress_step=settings.progress_step,
                progress_min_interval_seconds=settings.progress_min_interval_seconds,
            ),
        )
        seals = AssertionVerifier(
            load_public_key(settings.gateway_public_key_file), issuer="gateway"
        )
        guard = RequestGuard(
            events=uow, rejected=ExporterRequestRejected, grants=grants, seals=seals
        )
        register_rpc(broker, exporter, guard=guard)
        register_worker(
            broker,
            exporter,
            concurrency=settings.job_concurrency,
            verifier=CommandVerifier(
                verifier=grants,
                seals=seals,
                exporter=exporter,
                events=uow,
                max_age_seconds=settings.max_command_age_seconds,
            ),
        )
        sweeper = stale_job_sweeper(exporter, interval_seconds=settings.sweep_interval_seconds)
        yield exporter, broker, [outbox.relay, sweeper, *keys.components]
    finally:
        await pool.close()
