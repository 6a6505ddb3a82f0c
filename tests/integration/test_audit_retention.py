"""Append-only audit storage and retention that keeps the log verifiable (decision 0048).

A platform of its own, since these tests cut its log. As the service's database login (what a
local user who read audit's credentials holds), nothing chained can be changed or removed;
even a superuser's UPDATE is refused by the triggers until it turns them off, and then a full
verification names what it changed. The retention job, as its own role, cuts only a prefix
sealed by a signed genesis, never while a legal hold stands; the remaining log still verifies
offline, from the export bundle alone, and every cut and hold is itself in the log.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hypersdk_auditproof import merkle
from hypersdk_auditproof.entries import canonical, entry_leaf, format_timestamp
from hypersdk_auditproof.verify import verify_bundle

from .conftest import ADMIN_PASSWORD, Api, Stack, devstack, isolated_stack_config
from .test_export_journey import full_verification


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with isolated_stack_config(tmp_path_factory.mktemp("retention")) as config:
        devstack.up(config, admin_password=ADMIN_PASSWORD)
        yield Stack(
            config=config,
            api=Api(config.gateway_url),
            amqp_url=config.amqp_url(),
            database_url=config.database_url(),
        )


def _as(dsn: str, *statements: str) -> list[str]:
    """Run each statement on its own as ``dsn``'s role; the error of each (``ok`` if none)."""

    async def run() -> list[str]:
        conn = await asyncpg.connect(dsn)
        outcomes = []
        try:
            for statement in statements:
                try:
                    await conn.execute(statement)
                    outcomes.append("ok")
                except asyncpg.PostgresError as error:
                    outcomes.append(type(error).__name__)
        finally:
            await conn.close()
        return outcomes

    return asyncio.run(run())


def _rows(stack: Stack, query: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in stack.db(query, *args)]


def _grow(stack: Stack, token: str, calls: int) -> None:
    """Audited calls: each chains a ``gateway.request.completed`` entry."""
    for _ in range(calls):
        status, _, _ = stack.api.call("GET", "/api/v1/audit/holds", token=token)
        assert status == 200


def _size(stack: Stack) -> int:
    return int(stack.db("SELECT max(sequence) AS n FROM audit.entries")[0]["n"])


def _settled(stack: Stack, token: str) -> int:
    """The log's size once the audited calls made so far are chained."""
    status, verdict, _ = stack.api.call("GET", "/api/v1/audit/verify", token=token)
    assert status == 200
    assert verdict["valid"], verdict
    return _size(stack)


def _bundle(stack: Stack, token: str) -> list[str]:
    with httpx.stream(
        "GET",
        f"{stack.config.gateway_url}/api/v1/audit/export",
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200, response.read()
        return list(response.iter_lines())


def _trusted_keys(stack: Stack, token: str) -> dict[str, Any]:
    """The checkpoint keys as the platform publishes them (a witness would pin them)."""
    status, checkpoint, _ = stack.api.call("GET", "/api/v1/audit/checkpoints/latest", token=token)
    assert status == 200, checkpoint
    header = _bundle(stack, token)[0]
    keys = httpx.Response(200, content=header).json()["keys"]
    return {key_id: load_pem_public_key(pem.encode()) for key_id, pem in keys.items()}


def test_the_service_login_can_append_and_read_but_never_change_or_remove(kept: Stack) -> None:
    admin = kept.api.login("admin", ADMIN_PASSWORD)
    _grow(kept, admin, 3)
    _settled(kept, admin)
    service = kept.config.service_database_url("audit")
    owner = kept.config.db_role("audit_owner")
    outcomes = _as(
        service,
        "SELECT count(*) FROM audit.entries",
        "UPDATE audit.entries SET result = 'success' WHERE sequence = 1",
        "DELETE FROM audit.entries WHERE sequence = 1",
        "TRUNCATE audit.entries",
        "DROP TABLE audit.entries",
        "ALTER TABLE audit.entries DISABLE TRIGGER USER",
        "UPDATE audit.tree SET hash = '\\x00' WHERE level = 0 AND index = 0",
        "DELETE FROM audit.checkpoints",
        "DELETE FROM audit.quarantine",
        "INSERT INTO audit.genesis (size, cut_at, reason) VALUES (1, now(), 'size')",
        "CREATE TABLE audit.shadow (id int)",
        f'SET ROLE "{owner}"',
    )
    assert outcomes[0] == "ok"
    assert set(outcomes[1:]) <= {"InsufficientPrivilegeError"}, outcomes
    # The owner is nobody's login.
    assert _rows(kept, "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", owner) == [
        {"rolcanlogin": False}
    ]
    assert _rows(
        kept,
        "SELECT pg_get_userbyid(relowner) AS owner FROM pg_class "
        "WHERE oid = 'audit.entries'::regclass",
    ) == [{"owner": owner}]


def test_even_a_superuser_is_refused_until_it_turns_the_triggers_off(kept: Stack) -> None:
    admin = kept.api.login("admin", ADMIN_PASSWORD)
    _settled(kept, admin)
    superuser = kept.config.database_url()
    assert (
        _as(
            superuser,
            "UPDATE audit.entries SET result = 'success' WHERE sequence = 2",
            "DELETE FROM audit.entries WHERE sequence = 2",
            "TRUNCATE audit.tree",
        )
        == ["InsufficientPrivilegeError"] * 3
    )
    # A superuser can do anything in PostgreSQL, triggers off: then verification finds it.
    target = 2
    original = kept.db("SELECT result FROM audit.entries WHERE sequence = $1", target)[0]["result"]
    tamper = (
        "DO $$ BEGIN SET LOCAL session_replication_role = replica; "
        "UPDATE audit.entries SET result = '{result}' WHERE sequence = {target}; END $$"
    )
    kept.db(tamper.format(result="tampered", target=target))
    try:
        run = full_verification(kept.api, admin)
        assert run["valid"] is False
        assert (run["problems"][0]["code"], run["problems"][0]["sequence"]) == (
            "entry_edited",
            target,
        )
        assert run["kind"] == "full"
        assert run["status"] == "done"
    finally:
        kept.db(tamper.format(result=original.replace("'", "''"), target=target))
    assert full_verification(kept.api, admin)["valid"] is True


def test_the_retention_role_cuts_nothing_without_a_genesis(kept: Stack) -> None:
    retention = kept.config.service_database_url("audit_retention")
    assert (
        _as(
            retention,
            "DELETE FROM audit.entries WHERE sequence = 1",
            "UPDATE audit.entries SET result = 'success' WHERE sequence = 1",
            "DELETE FROM audit.tree",
            "TRUNCATE audit.entries",
        )
        == ["InsufficientPrivilegeError"] * 4
    )
    # A genesis of its own making (a checkpoint row it may insert, unsigned) does not let it cut
    # silently either: the cut must be recorded in the chain first. All in one statement, so
    # nothing of it stays.
    forged = (
        "DO $$ DECLARE h char(64); BEGIN "
        "SELECT hash INTO h FROM audit.entries WHERE sequence = 1; "
        "INSERT INTO audit.checkpoints (size, origin, root, head, time, key_id, signature) "
        "VALUES (1, 'hypersdk', '\\x00', h, now(), 'ed25519:0000000000000000', '\\x00') "
        "ON CONFLICT DO NOTHING; "
        "INSERT INTO audit.genesis (size, cut_at, reason) VALUES (1, now(), 'size'); "
        "DELETE FROM audit.entries WHERE sequence <= 1; END $$"
    )
    assert _as(retention, forged) == ["InsufficientPrivilegeError"]
    assert kept.db("SELECT count(*) AS n FROM audit.genesis")[0]["n"] == 0


def test_a_cut_keeps_the_rest_verifiable_and_is_itself_recorded(kept: Stack) -> None:
    admin = kept.api.login("admin", ADMIN_PASSWORD)
    status, old, _ = kept.api.call("POST", "/api/v1/audit/checkpoints", token=admin)
    assert status == 200, old
    _grow(kept, admin, 20)
    _settled(kept, admin)
    keep = 10

    output = devstack.retain(kept.config, RETENTION_MAX_ENTRIES=str(keep))
    for name in ("audit", "audit_retention"):  # nothing secret in the job's output
        password = (kept.config.secret_dir / "postgres" / name).read_text().strip()
        assert password not in output

    genesis = int(kept.db("SELECT max(size) AS n FROM audit.genesis")[0]["n"])
    assert f"cut {genesis} audit entries by size" in output, output
    rows = kept.db("SELECT min(sequence) AS first FROM audit.entries")
    assert rows[0]["first"] == genesis + 1
    record = _rows(
        kept,
        'SELECT sequence, action, "user", resource, producer FROM audit.entries '
        "WHERE action = 'audit.retention.cut'",
    )
    assert len(record) == 1
    assert record[0]["sequence"] - genesis == keep  # the newest, the record among them
    assert {k: v for k, v in record[0].items() if k != "sequence"} == {
        "action": "audit.retention.cut",
        "user": "audit-retention",
        "resource": f"entries/1-{genesis}",
        "producer": "audit",
    }
    # The remaining log verifies offline from its genesis, against the published keys.
    status, latest, _ = kept.api.call("POST", "/api/v1/audit/checkpoints", token=admin)
    assert status == 200
    lines = _bundle(kept, admin)
    header = httpx.Response(200, content=lines[0]).json()
    assert header["genesis"]["size"] == genesis
    report = verify_bundle(lines, keys=_trusted_keys(kept, admin))
    assert report.valid, report.problems
    assert report.first_sequence == genesis + 1
    assert report.latest_checkpoint == latest["size"]
    # Cutting the bundle's oldest remaining entry is still caught (the genesis anchors it).
    cut_further = [line for line in lines if f'"sequence":{genesis + 1},' not in line]
    assert not verify_bundle(cut_further, keys=_trusted_keys(kept, admin)).valid
    # The tree was kept whole: an old checkpoint is still consistent with the new one, and a
    # remaining entry's inclusion proof verifies.
    status, proof, _ = kept.api.call(
        "GET",
        f"/api/v1/audit/proofs/consistency?first={old['size']}&second={latest['size']}",
        token=admin,
    )
    assert status == 200, proof
    assert merkle.verify_consistency(
        old["size"],
        latest["size"],
        [bytes.fromhex(h) for h in proof["hashes"]],
        bytes.fromhex(old["root"]),
        bytes.fromhex(latest["root"]),
    )
    status, inclusion, _ = kept.api.call(
        "GET", f"/api/v1/audit/proofs/inclusion?sequence={genesis + 1}", token=admin
    )
    assert status == 200, inclusion
    entry = inclusion["entry"]
    leaf = entry_leaf(canonical(_hashed(entry)))
    assert merkle.verify_inclusion(
        leaf,
        genesis,
        latest["size"],
        [bytes.fromhex(h) for h in inclusion["hashes"]],
        bytes.fromhex(latest["root"]),
    )
    status, gone, _ = kept.api.call(
        "GET", f"/api/v1/audit/proofs/inclusion?sequence={genesis}", token=admin
    )
    assert status == 404, gone
    # The service still verifies, incrementally and in full.
    status, verdict, _ = kept.api.call("GET", "/api/v1/audit/verify", token=admin)
    assert verdict["valid"], verdict
    run = full_verification(kept.api, admin)
    assert run["valid"], run
    assert run["from_size"] == genesis
    # Deleting in the middle after the genesis, as the retention role: refused.
    retention = kept.config.service_database_url("audit_retention")
    assert _as(retention, f"DELETE FROM audit.entries WHERE sequence = {genesis + 2}") == [
        "InsufficientPrivilegeError"
    ]
    # A second run has nothing left to cut.
    assert "nothing" in devstack.retain(kept.config, RETENTION_MAX_ENTRIES=str(10**6))


def test_a_legal_hold_suspends_cutting_until_it_is_lifted(kept: Stack) -> None:
    admin = kept.api.login("admin", ADMIN_PASSWORD)
    auditor = _user(kept, admin, "auditor")
    status, refused, _ = kept.api.call(
        "POST", "/api/v1/audit/holds", {"reason": "case 42"}, token=auditor
    )
    assert status == 403, refused
    for body in ({}, {"reason": ""}, {"reason": "x" * 501}, {"reason": 42}):
        status, invalid, _ = kept.api.call("POST", "/api/v1/audit/holds", body, token=admin)
        assert status == 422, (body, invalid)
    status, hold, _ = kept.api.call(
        "POST", "/api/v1/audit/holds", {"reason": "case 42"}, token=admin
    )
    assert status == 201, hold
    assert hold["placed_by"] == "admin"
    assert hold["lifted_at"] is None
    _grow(kept, admin, 15)
    size = _settled(kept, admin)

    assert "held" in devstack.retain(kept.config, RETENTION_MAX_ENTRIES="5")
    assert kept.db("SELECT max(size) AS n FROM audit.genesis")[0]["n"] < size - 5
    # The database refuses the cut too, whatever the job believes.
    retention = kept.config.service_database_url("audit_retention")
    assert _as(retention, "DELETE FROM audit.entries WHERE sequence <= 1") == [
        "InsufficientPrivilegeError"
    ]
    status, listed, _ = kept.api.call("GET", "/api/v1/audit/holds", token=auditor)
    assert status == 200
    assert hold["id"] in [item["id"] for item in listed]

    status, lifted, _ = kept.api.call("DELETE", f"/api/v1/audit/holds/{hold['id']}", token=admin)
    assert status == 200, lifted
    assert lifted["lifted_by"] == "admin"
    status, again, _ = kept.api.call("DELETE", f"/api/v1/audit/holds/{hold['id']}", token=admin)
    assert status == 404, again
    assert _rows(
        kept,
        'SELECT action, "user" FROM audit.entries WHERE resource = $1 ORDER BY sequence',
        f"hold/{hold['id']}",
    ) == [
        {"action": "audit.hold.place", "user": "admin"},
        {"action": "audit.hold.lift", "user": "admin"},
    ]
    assert "cut" in devstack.retain(kept.config, RETENTION_MAX_ENTRIES="5")
    assert full_verification(kept.api, admin)["valid"] is True


def test_concurrent_verifications_share_one_walk(kept: Stack) -> None:
    admin = kept.api.login("admin", ADMIN_PASSWORD)
    _grow(kept, admin, 5)
    _settled(kept, admin)
    _grow(kept, admin, 5)
    started = time.monotonic()

    async def verify_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=kept.config.gateway_url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.get("/api/v1/audit/verify", headers={"authorization": f"Bearer {admin}"})
                    for _ in range(20)
                )
            )

    answers = asyncio.run(verify_all())
    assert [answer.status_code for answer in answers] == [200] * 20, [
        answer.text for answer in answers if answer.status_code != 200
    ]
    runs = {answer.json()["verification"]["id"] for answer in answers}
    assert len(runs) < 20  # callers arriving together shared a run
    assert all(answer.json()["valid"] for answer in answers)
    assert time.monotonic() - started < 30


def _user(stack: Stack, admin: str, role: str) -> str:
    username = f"{role}-{secrets.token_hex(3)}"
    password = "pw-" + secrets.token_urlsafe(12)
    status, body, _ = stack.api.call(
        "POST",
        "/api/v1/users",
        {"username": username, "password": password, "roles": [role]},
        token=admin,
    )
    assert status == 201, body
    return stack.api.login(username, password)


def _hashed(entry: dict[str, Any]) -> dict[str, Any]:
    """An API entry with its times in their hashed form."""
    out = dict(entry)
    for name in ("timestamp", "received_at"):
        if out.get(name) is not None:
            out[name] = format_timestamp(datetime.fromisoformat(out[name]))
    return out
