"""The composition root: builds the platform client of a run from its options.

Tests call :func:`build` with their own store and API factory (fakes of the ports).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hypersdk_cli.adapters.outbound.files import FileConfigStore, config_dir
from hypersdk_cli.adapters.outbound.http import HttpxPlatformApi
from hypersdk_cli.config import GlobalOptions, Target, resolve_target
from hypersdk_cli.core.platform import Platform
from hypersdk_cli.core.session import Clock, Credentials, utc_now
from hypersdk_cli.ports.outbound import ConfigStore, PlatformApi

ApiFactory = Callable[[Target, GlobalOptions], PlatformApi]


def httpx_api(target: Target, options: GlobalOptions) -> PlatformApi:
    """The real API adapter for ``target``."""
    return HttpxPlatformApi(
        server=target.server,
        ca_bundle=target.ca_bundle,
        pin_sha256=target.pin_sha256,
        timeout_seconds=options.timeout_seconds,
    )


@dataclass
class Runtime:
    """What a command works with."""

    target: Target
    api: PlatformApi
    store: ConfigStore
    platform: Platform
    clock: Clock


@dataclass(frozen=True)
class Wiring:
    """How to build the adapters: real ones by default, fakes in tests."""

    environ: Mapping[str, str]
    store: Callable[[], ConfigStore]
    api: ApiFactory = httpx_api
    clock: Clock = utc_now


def default_wiring() -> Wiring:
    """The wiring of a real run: files under the user's config dir, httpx."""
    environ = dict(os.environ)
    return Wiring(environ=environ, store=lambda: FileConfigStore(config_dir(environ)))


def build(options: GlobalOptions, wiring: Wiring, store: ConfigStore) -> Runtime:
    """The runtime of one run."""
    target = resolve_target(options, store.load_config(), wiring.environ)
    api = wiring.api(target, options)
    credentials = Credentials(
        api=api,
        store=store,
        context=target.context,
        server=target.server,
        api_key=target.api_key,
        clock=wiring.clock,
    )
    return Runtime(
        target=target,
        api=api,
        store=store,
        platform=Platform(api, credentials),
        clock=wiring.clock,
    )
