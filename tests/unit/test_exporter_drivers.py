"""Provider drivers: one registry by type, and each driver's typed config refuses bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_exporter.adapters.outbound.driver_support import (
    DriverConfig,
    decode_token,
    encode_token,
    parse_config,
)
from hypersdk_exporter.adapters.outbound.drivers import DRIVERS, build_drivers
from hypersdk_exporter.adapters.outbound.libvirt_driver import LibvirtDriver
from hypersdk_exporter.adapters.outbound.local_lab import LocalLabDriver
from hypersdk_exporter.config import ExporterSettings
from hypersdk_exporter.core.models import Credential


@pytest.fixture
def settings(tmp_path: Path) -> ExporterSettings:
    (tmp_path / "lab").mkdir()
    return ExporterSettings(
        database_url="postgresql://x@localhost/x",
        amqp_url="amqp://x@localhost/",
        export_dir=tmp_path / "exports",
        lab_root=tmp_path / "lab",
        policy_public_key_file=tmp_path / "policy.pem",
        gateway_public_key_file=tmp_path / "gateway.pem",
    )


def test_every_registered_type_builds_a_driver_of_that_type(settings: ExporterSettings) -> None:
    drivers = build_drivers(settings)

    assert set(drivers) == set(DRIVERS) >= {"local", "libvirt"}
    assert all(driver.type == type_ for type_, driver in drivers.items())
    assert isinstance(drivers["local"], LocalLabDriver)
    assert isinstance(drivers["libvirt"], LibvirtDriver)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({}, id="no-uri"),
        pytest.param({"uri": ""}, id="empty"),
        pytest.param({"uri": "qemu:///system", "host": "x"}, id="unknown-key"),
        pytest.param({"uri": "qemu+ext:///system?command=/bin/sh"}, id="ext-runs-a-command"),
        pytest.param({"uri": "qemu+ssh://h/system?command=/bin/sh"}, id="ssh-command"),
        pytest.param({"uri": "qemu+ssh://h/system?netcat=/tmp/nc"}, id="ssh-netcat"),
        pytest.param({"uri": "qemu+tls://h/system?pkipath=/root"}, id="pki-path"),
        pytest.param({"uri": "qemu+unix:///system?socket=/tmp/s"}, id="socket"),
        pytest.param({"uri": "xen:///system"}, id="other-hypervisor"),
        pytest.param({"uri": "/etc/passwd"}, id="no-scheme"),
        pytest.param({"uri": "test:///default"}, id="test-default"),
        pytest.param({"uri": "test:///etc/libvirt/node.xml"}, id="test-outside-lab"),
        pytest.param({"uri": "test://LAB/../outside.xml"}, id="test-dot-dot"),
        pytest.param({"uri": "qemu:///system#x"}, id="fragment"),
        pytest.param({"uri": "q" * 600}, id="too-long"),
    ],
)
def test_libvirt_config_refuses(config: dict[str, str], settings: ExporterSettings) -> None:
    driver = build_drivers(settings)["libvirt"]
    config = {k: v.replace("LAB", str(settings.lab_root)) for k, v in config.items()}

    with pytest.raises(ServiceError) as error:
        driver.validate_config(config)

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert "/bin/sh" not in error.value.message  # names the problem, never echoes the value


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "qemu+ssh://admin@kvm1.example/system",
        "qemu+tls://kvm1.example/system?no_verify=1",
        "test://LAB/node.xml",
    ],
)
def test_libvirt_config_accepts(uri: str, settings: ExporterSettings) -> None:
    build_drivers(settings)["libvirt"].validate_config(
        {"uri": uri.replace("LAB", str(settings.lab_root))}
    )


def test_config_errors_name_fields_not_values() -> None:
    class Sample(DriverConfig):
        port: int

    with pytest.raises(ServiceError) as error:
        parse_config(Sample, {"port": "hunter2", "password": "hunter2"})

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert "config.port" in error.value.message
    assert "config.password: unknown key" in error.value.message
    assert "hunter2" not in error.value.message


@pytest.mark.parametrize("position", ["web-01", "ünïcode name", "a/b"])
def test_page_tokens_round_trip(position: str) -> None:
    token = encode_token(position)
    assert decode_token(token) == position
    assert decode_token(None) is None


def test_a_credential_never_shows_its_values() -> None:
    credential = Credential(ref="providers/kvm", values={"username": "root", "password": "s3cr3t"})

    for text in (repr(credential), str(credential), f"{credential}", repr([credential])):
        assert "s3cr3t" not in text
        assert "providers/kvm" in text
    assert credential.get("password") == "s3cr3t"
