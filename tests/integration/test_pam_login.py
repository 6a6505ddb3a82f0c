"""Linux PAM users through the gateway, against the real PAM (pam_unix) and /etc/shadow.

A real Linux user in a real group, a pam.d file with ``pam_unix.so nodelay``, and the identity
service of the test stack configured with that PAM service and a group-to-role map (see
conftest). The user logs in, is provisioned on the way with the group's role, and is refused
with a wrong password exactly as an unknown user is. Everything is removed afterwards.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ADMIN_PASSWORD, PAM_GROUP, PAM_SERVICE, Stack

# The example stack the project ships, so that the test proves the example works.
PAM_STACK = (Path(__file__).resolve().parents[2] / "deploy" / "pam" / "hypersdk").read_text()


@dataclass
class LinuxUser:
    username: str
    password: str


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def _create_user(username: str, password: str, *groups: str) -> LinuxUser:
    extra = ["-G", ",".join(groups)] if groups else []
    _run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", *extra, username)
    subprocess.run(
        ["chpasswd"], input=f"{username}:{password}\n", text=True, check=True, capture_output=True
    )
    return LinuxUser(username, password)


@pytest.fixture(scope="module")
def linux() -> Iterator[dict[str, LinuxUser]]:
    """A mapped-group user, an unmapped user, the group and the pam.d file; all removed after."""
    suffix = secrets.token_hex(3)
    pam_file = Path("/etc/pam.d") / PAM_SERVICE
    created: list[str] = []
    _run("groupadd", PAM_GROUP)
    try:
        pam_file.write_text(PAM_STACK)
        users = {}
        for key, groups in (("ops", (PAM_GROUP,)), ("plain", ())):
            user = _create_user(
                f"hsdk-{key}-{suffix}", f"linux-{key}-{secrets.token_hex(8)}", *groups
            )
            created.append(user.username)
            users[key] = user
        yield users
    finally:
        for username in created:
            subprocess.run(["userdel", username], check=False, capture_output=True)
        subprocess.run(["groupdel", PAM_GROUP], check=False, capture_output=True)
        pam_file.unlink(missing_ok=True)


def _login(stack: Stack, username: str, password: str) -> tuple[int, dict[str, object]]:
    status, body, _ = stack.api.call(
        "POST",
        "/api/v1/auth/login",
        {"username": username, "password": password},
        headers={"X-Forwarded-For": "198.51.100.61"},
    )
    return status, body


def test_a_linux_user_in_a_mapped_group_logs_in_with_the_groups_role(
    stack: Stack, linux: dict[str, LinuxUser]
) -> None:
    ops = linux["ops"]

    status, body = _login(stack, ops.username, ops.password)

    assert status == 200, body
    token = str(body["token"])
    user = body["user"]
    assert isinstance(user, dict)
    assert (user["username"], user["source"]) == (ops.username, "pam")
    status, me, _ = stack.api.call("GET", "/api/v1/auth/me", token=token)
    assert status == 200
    assert me["external_roles"] == ["operator"]
    assert me["roles"] == []
    # The operator role from the group is enforced: browsing allowed, user admin refused.
    assert stack.api.call("GET", "/api/v1/vms", token=token)[0] == 200
    assert stack.api.call("GET", "/api/v1/users", token=token)[0] == 403
    rows = stack.db(
        "SELECT source, password_hash FROM identity.users WHERE username = $1", ops.username
    )
    assert [(r["source"], r["password_hash"]) for r in rows] == [("pam", None)]


def test_a_wrong_linux_password_is_refused_like_an_unknown_user(
    stack: Stack, linux: dict[str, LinuxUser]
) -> None:
    ops = linux["ops"]

    started = time.perf_counter()
    wrong_status, wrong = _login(stack, ops.username, "not-the-linux-password")
    wrong_seconds = time.perf_counter() - started
    unknown_status, unknown = _login(stack, "hsdk-nobody-" + secrets.token_hex(3), "whatever-1234")

    assert (wrong_status, unknown_status) == (401, 401)
    assert wrong["error"]["code"] == unknown["error"]["code"] == "invalid_credentials"  # type: ignore[index]
    assert wrong["error"]["message"] == unknown["error"]["message"]  # type: ignore[index]
    # PAM's own words never reach the client.
    for leak in ("Authentication failure", "pam", "PAM", "unix"):
        assert leak not in json.dumps(wrong)
    # pam_unix with nodelay answers in ~40 ms; the dummy bcrypt check alongside makes it ~250.
    assert wrong_seconds > 0.15
    # And the right password still works (two free failures before any delay).
    assert _login(stack, ops.username, ops.password)[0] == 200


def test_a_linux_user_outside_the_mapped_groups_needs_an_admin(
    stack: Stack, linux: dict[str, LinuxUser]
) -> None:
    plain = linux["plain"]
    admin = stack.api.login("admin", ADMIN_PASSWORD)

    before, _ = _login(stack, plain.username, plain.password)
    status, created, _ = stack.api.call(
        "POST",
        "/api/v1/users",
        {"username": plain.username, "source": "pam", "roles": ["viewer"]},
        token=admin,
    )
    after, body = _login(stack, plain.username, plain.password)

    assert before == 401
    assert status == 201, created
    assert created["user"]["source"] == "pam"
    assert after == 200, body
    status, me, _ = stack.api.call("GET", "/api/v1/auth/me", token=str(body["token"]))
    assert (me["roles"], me["external_roles"]) == (["viewer"], [])
    status, refused, _ = stack.api.call(
        "POST",
        "/api/v1/users",
        {"username": "hsdk-not-linux-" + secrets.token_hex(3), "source": "pam"},
        token=admin,
    )
    assert status == 422, refused


def test_pam_logins_are_audited_with_their_method(
    stack: Stack, linux: dict[str, LinuxUser]
) -> None:
    ops = linux["ops"]
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    assert _login(stack, ops.username, ops.password)[0] == 200

    for _ in range(50):
        entries = [e for e in stack.api.recent_audit(admin) if e["user"] == ops.username]
        actions = {(e["action"], e["result"]) for e in entries}
        if ("auth.login", "success") in actions:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the PAM login was not audited")
    provisioned = [
        e for e in stack.api.recent_audit(admin, last=2000)
        if e["action"] == "user.create" and e["resource"] == f"user/{ops.username}"
    ]  # fmt: skip
    assert provisioned
    assert provisioned[0]["user"] == "pam-provisioning"
    logs = "\n".join(p.read_text(errors="replace") for p in Path(stack.log_dir).glob("*.log"))
    assert ops.password not in logs
