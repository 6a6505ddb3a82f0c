"""The README's journey with hyperctl, the real process, against the real platform.

Log in (password on stdin), store a provider credential, register a provider, list VMs,
export one and wait for it, see the job; a viewer is refused with exit 4 and the request id;
an API key for scripts; the audit trail; routes not built yet; log out. Every secret goes in
on stdin and never comes out.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hypersdk_auditproof.verify import verify_bundle

from .conftest import ADMIN_PASSWORD, Stack


@dataclass
class Hyperctl:
    """hyperctl as a person at a shell would run it: its own config dir, the stack's server."""

    server: str
    config_home: Path

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.config_home),
            "XDG_CONFIG_HOME": str(self.config_home),
            "HYPERSDK_SERVER": self.server,
            **(env or {}),
        }
        return subprocess.run(
            [sys.executable, "-m", "hypersdk_cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=environ,
            timeout=120,
            check=False,
        )

    def json(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
        result = self.run(*args, "-o", "json", stdin=stdin, env=env)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else None


@pytest.fixture(scope="module")
def admin(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Hyperctl:
    cli = Hyperctl(stack.config.gateway_url, tmp_path_factory.mktemp("hyperctl-admin"))
    result = cli.run("login", "--username", "admin", "--password-stdin", stdin=ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr
    return cli


def test_login_stores_a_private_session_and_whoami_reads_it(admin: Hyperctl) -> None:
    session = admin.config_home / "hyperctl" / "sessions" / "default.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert stat.S_IMODE(session.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((admin.config_home / "hyperctl").stat().st_mode) == 0o700
    me = admin.json("whoami")
    assert me["username"] == "admin"
    assert me["kind"] == "session"
    assert "admin" in me["roles"]
    sessions = admin.json("sessions", "list")
    assert [s["id"] for s in sessions if s["current"]] == [me["session_id"]]


def test_the_readme_journey(admin: Hyperctl, stack: Stack) -> None:
    secret = {"username": "svc-export", "password": "cli-journey-" + os.urandom(6).hex()}
    put = admin.run("secrets", "put", "providers/cli-lab", stdin=json.dumps(secret))
    assert put.returncode == 0, put.stderr
    assert secret["password"] not in put.stdout + put.stderr
    new = {**secret, "password": "cli-rotated-" + os.urandom(6).hex()}
    rotated = admin.run(
        "secrets", "rotate", "providers/cli-lab", "-o", "json", stdin=json.dumps(new)
    )
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["previous_version"] >= 1
    assert new["password"] not in rotated.stdout + rotated.stderr
    listed = admin.run("secrets", "list", "-o", "json")
    assert "providers/cli-lab" in listed.stdout
    assert secret["password"] not in listed.stdout

    provider = admin.json(
        "providers", "add", "cli-lab", "--type", "local",
        "--config", "directory=demo", "--credential-ref", "providers/cli-lab",
    )  # fmt: skip
    assert provider["credential_ref"] == "providers/cli-lab"
    assert secret["password"] not in json.dumps(admin.json("providers", "show", "cli-lab"))
    table = admin.run("providers", "list")
    assert table.returncode == 0, table.stderr
    assert "cli-lab" in table.stdout

    vms = admin.json("vms", "list", "--provider", "cli-lab")
    assert {vm["id"] for vm in vms} >= {"cli-lab/web-01", "cli-lab/db-01"}
    assert admin.json("vms", "show", "cli-lab/web-01")["disks"]

    export = admin.run("export", "cli-lab/web-01", "--format", "qcow2", "--wait", "-o", "json")
    assert export.returncode == 0, export.stderr
    job = json.loads(export.stdout)
    assert job["status"] == "succeeded"
    assert job["artifacts"]
    assert f"job {job['id']}" in export.stderr  # progress lines, without a terminal

    jobs = admin.json("jobs", "list", "--status", "succeeded", "--provider", "cli-lab")
    assert job["id"] in [j["id"] for j in jobs]
    shown = admin.json("jobs", "show", job["id"])
    assert [h["action"] for h in shown["history"]][-1] == "succeeded"
    again = admin.run("jobs", "cancel", job["id"])
    assert again.returncode == 6
    assert again.stderr.startswith("error: conflict:")

    status, api_job, _ = stack.api.call(
        "GET", f"/api/v1/jobs/{job['id']}", token=stack.api.login("admin", ADMIN_PASSWORD)
    )
    assert status == 200
    assert api_job["artifacts"] == job["artifacts"]  # the same JSON as the API's


def test_a_viewer_is_refused_with_exit_4_and_the_request_id(
    admin: Hyperctl, tmp_path: Path
) -> None:
    password = "viewer-cli-" + os.urandom(8).hex()
    added = admin.run("users", "add", "vic", "--role", "viewer", "--password-stdin", stdin=password)
    assert added.returncode == 0, added.stderr
    assert password not in added.stdout + added.stderr
    assert admin.json("users", "show", "vic")["roles"] == ["viewer"]

    viewer = Hyperctl(admin.server, tmp_path)
    assert viewer.run("login", "-u", "vic", "--password-stdin", stdin=password).returncode == 0
    assert viewer.run("vms", "list").returncode == 0
    refused = viewer.run("export", "demo-lab/web-01", "--format", "qcow2")
    assert refused.returncode == 4
    line = refused.stderr.strip()
    assert line.startswith("error: forbidden: This call needs the vms:export permission.")
    assert "(request " in line
    assert len(line.splitlines()) == 1

    assert admin.run("users", "delete", "vic").returncode == 0
    gone = viewer.run("vms", "list")  # deleting the user ended the session
    assert gone.returncode == 3


def test_an_api_key_for_scripts(admin: Hyperctl, tmp_path: Path) -> None:
    issued = admin.json("api-keys", "create", "--name", "cli-ci", "--scope", "jobs:view")
    key = issued["key"]
    script = Hyperctl(admin.server, tmp_path)
    env = {"HYPERSDK_API_KEY": key}
    jobs = script.run("jobs", "list", "-o", "json", env=env)
    assert jobs.returncode == 0, jobs.stderr
    assert isinstance(json.loads(jobs.stdout), list)
    narrow = script.run("vms", "list", env=env)  # not in the key's scopes
    assert narrow.returncode == 4
    assert key not in narrow.stdout + narrow.stderr

    listed = admin.json("api-keys", "list")
    assert issued["api_key"]["id"] in [k["id"] for k in listed]
    assert key not in json.dumps(listed)
    revoked = admin.run("api-keys", "revoke", issued["api_key"]["id"])
    assert revoked.returncode == 0, revoked.stderr
    after = script.run("jobs", "list", env=env)
    assert after.returncode == 3
    assert key not in after.stderr


def test_the_audit_trail_and_its_bundle(admin: Hyperctl) -> None:
    entries = admin.json("audit", "events", "--limit", "5")
    assert len(entries) == 5
    assert {"sequence", "action", "hash", "prev_hash"} <= set(entries[0])
    verdict = admin.json("audit", "verify")
    assert verdict["valid"] is True
    assert isinstance(admin.json("audit", "quarantine"), list)
    export = admin.run("audit", "export")
    assert export.returncode == 0, export.stderr
    lines = export.stdout.splitlines()
    assert json.loads(lines[0])["format"] == "hypersdk-audit-bundle/v1"
    assert verify_bundle(lines).valid


def test_without_a_credential_or_with_a_bogus_one(admin: Hyperctl, tmp_path: Path) -> None:
    nobody = Hyperctl(admin.server, tmp_path)
    missing = nobody.run("vms", "list")
    assert missing.returncode == 3
    assert missing.stderr.startswith("error: not_logged_in:")
    bogus = nobody.run("vms", "list", env={"HYPERSDK_API_KEY": "hsk_not_a_real_key_123456"})
    assert bogus.returncode == 3
    assert "hsk_not_a_real_key" not in bogus.stderr
    assert "(request " in bogus.stderr


def test_logout_ends_the_session(stack: Stack, tmp_path: Path) -> None:
    cli = Hyperctl(stack.config.gateway_url, tmp_path)
    assert cli.run("login", "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD).returncode == 0
    token = json.loads((tmp_path / "hyperctl" / "sessions" / "default.json").read_text())["token"]
    assert cli.run("logout").returncode == 0
    assert not (tmp_path / "hyperctl" / "sessions" / "default.json").exists()
    status, _, _ = stack.api.call("GET", "/api/v1/auth/me", token=token)
    assert status == 401  # ended on the server, not only forgotten here
    assert cli.run("whoami").returncode == 3
