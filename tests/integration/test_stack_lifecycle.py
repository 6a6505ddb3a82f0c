"""``make up`` / ``make down``: the supervisor owns every platform process and stops only them."""

from __future__ import annotations

import grp
import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import Api, _port_free, devstack, isolated_stack_config

PASSWORD = "lifecycle-admin-password"
CANARY = "persisted-canary-value-0012"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_down_stops_every_process_it_started_and_nothing_else(
    tmp_path: Path,
) -> None:
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        with isolated_stack_config(tmp_path / "state") as config:
            _check_up_and_down(config, bystander)
    finally:
        bystander.kill()
        bystander.wait()


def _check_up_and_down(config: devstack.StackConfig, bystander: subprocess.Popen[bytes]) -> None:
    info = devstack.up(config, admin_password=PASSWORD)
    api = Api(config.gateway_url)
    admin = api.login("admin", PASSWORD)
    status, body, _ = api.call(
        "PUT", "/api/v1/secrets/providers/persisted", {"data": {"password": CANARY}}, token=admin
    )
    assert status == 200, body
    supervisor = devstack.running_pid(config)
    assert supervisor is not None
    children = _children(supervisor)
    # OpenBao and every service.
    assert len(children) == 1 + len(devstack.SERVICES), children
    password_file = Path(info["admin_password_file"])
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    state = config.state_dir.stat()
    if os.geteuid() == 0:  # qemu-img's unprivileged user passes through to its export directory
        assert oct(state.st_mode & 0o777) == "0o710"
        assert state.st_gid == grp.getgrnam(devstack.CONVERSION_USER).gr_gid
    else:
        assert oct(state.st_mode & 0o777) == "0o700"

    assert devstack.down(config) is True
    assert not _alive(supervisor)
    assert [pid for pid in children if _alive(pid)] == []
    assert _port_free(config.gateway_port)
    assert bystander.poll() is None, "down must not touch processes it did not start"
    assert devstack.down(config) is False
    _check_secrets_survive(config)


def _check_secrets_survive(config: devstack.StackConfig) -> None:
    """OpenBao keeps its storage under the state directory: ``make down && make up`` keeps
    every secret and its versions; it is unsealed again by the setup, never by a person."""
    devstack.up(config, admin_password=PASSWORD)
    api = Api(config.gateway_url)
    admin = api.login("admin", PASSWORD)
    status, listed, _ = api.call("GET", "/api/v1/secrets", token=admin)
    assert status == 200, listed
    kept = [s for s in listed if s["path"] == "providers/persisted"]
    assert [s["version"] for s in kept] == [1]
    status, body, _ = api.call(
        "PUT", "/api/v1/secrets/providers/persisted", {"data": {"password": CANARY}}, token=admin
    )
    assert (status, body["version"]) == (200, 2)
    for path in config.log_dir.iterdir():
        assert CANARY.encode() not in path.read_bytes(), path.name
    assert devstack.down(config) is True
    _check_a_failed_setup_leaves_nothing(config)


def _check_a_failed_setup_leaves_nothing(config: devstack.StackConfig) -> None:
    """OpenBao cannot be unsealed (a wrong key): ``up`` fails at once, naming the log, and the
    supervisor leaves no OpenBao or service behind (it used to leave OpenBao orphaned)."""
    key = config.secret_dir / "openbao-unseal-key"
    right = key.read_text()
    key.write_text("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=\n")
    try:
        with pytest.raises(SystemExit, match="supervisor exited"):
            devstack.up(config, admin_password=PASSWORD)
        time.sleep(0.5)
        leftovers = [
            entry.name
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and str(config.state_dir).encode() in _cmdline(entry)
        ]
        assert leftovers == [], leftovers
    finally:
        key.write_text(right)
        devstack.down(config)


def _cmdline(entry: Path) -> bytes:
    try:
        return (entry / "cmdline").read_bytes()
    except OSError:
        return b""
