"""hyperctl's full verifications and legal holds (decision 0048), on the fake platform."""

from __future__ import annotations

import json
from typing import Any

from click.testing import Result

from hypersdk_cli.ports.outbound import ApiReply

from .hyperctl_fake import envelope
from .test_hyperctl_commands import World


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _run(status: str, *, valid: bool | None, problems: list[dict[str, Any]] | None = None) -> Any:
    return {
        "id": "run-1",
        "kind": "full",
        "status": status,
        "valid": valid,
        "from_size": 0,
        "to_size": 40,
        "checked": 40 if status == "done" else 0,
        "problems": problems or [],
    }


def test_a_full_verification_is_started_and_waited_for() -> None:
    world = World()
    world.api.overrides[("POST", "/audit/verifications")] = ApiReply(
        202, _run("running", valid=None)
    )
    world.api.overrides[("GET", "/audit/verifications/run-1")] = ApiReply(
        200, _run("done", valid=True)
    )
    run = _json(world.run("audit", "verify", "--full", "-o", "json"))
    assert (run["status"], run["valid"]) == ("done", True)
    assert [(c.method, c.path) for c in world.api.calls][-2:] == [
        ("POST", "/audit/verifications"),
        ("GET", "/audit/verifications/run-1"),
    ]


def test_a_full_verification_that_finds_an_edit_exits_10_and_names_it() -> None:
    world = World()
    problem = {"code": "entry_edited", "sequence": 5, "message": "its hash does not match"}
    world.api.overrides[("POST", "/audit/verifications")] = ApiReply(
        202, _run("done", valid=False, problems=[problem])
    )
    result = world.run("audit", "verify", "--full")
    assert result.exit_code == 10
    assert "entry_edited at entry 5" in result.stderr


def test_an_abandoned_verification_is_not_taken_for_valid() -> None:
    world = World()
    world.api.overrides[("POST", "/audit/verifications")] = ApiReply(
        202, _run("abandoned", valid=None)
    )
    assert world.run("audit", "verify", "--full").exit_code == 10


def test_holds_are_listed_placed_and_lifted() -> None:
    world = World()
    hold = {
        "id": "hold-1",
        "reason": "case 42",
        "placed_by": "admin",
        "placed_at": "2026-12-07T12:00:00Z",
        "lifted_by": None,
        "lifted_at": None,
    }
    world.api.overrides[("POST", "/audit/holds")] = ApiReply(201, hold)
    world.api.overrides[("GET", "/audit/holds")] = ApiReply(200, [hold])
    world.api.overrides[("DELETE", "/audit/holds/hold-1")] = ApiReply(
        200, {**hold, "lifted_by": "admin", "lifted_at": "2026-12-07T12:05:00Z"}
    )
    assert _json(world.run("audit", "holds", "place", "case 42", "-o", "json"))["id"] == "hold-1"
    placed = [c for c in world.api.calls if (c.method, c.path) == ("POST", "/audit/holds")]
    assert placed[-1].json == {"reason": "case 42"}
    listed = world.run("audit", "holds", "list")
    assert listed.exit_code == 0
    assert "case 42" in listed.stdout
    lifted = _json(world.run("audit", "holds", "lift", "hold-1", "-o", "json"))
    assert lifted["lifted_by"] == "admin"


def test_a_hold_id_cannot_reach_another_route() -> None:
    world = World()
    world.run("audit", "holds", "lift", "../verifications")
    assert world.api.calls[-1].path == "/audit/holds/..%2Fverifications"


def test_placing_a_hold_without_the_permission_exits_4() -> None:
    world = World()
    world.api.overrides[("POST", "/audit/holds")] = envelope(
        403, "forbidden", "system:configure is required."
    )
    assert world.run("audit", "holds", "place", "case 42").exit_code == 4
