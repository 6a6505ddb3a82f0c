"""``hypersdk-audit-verify``: exit status, human and JSON output, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_auditproof.bundle import public_key_pem
from hypersdk_auditproof.cli import KEYS_FROM_BUNDLE_WARNING, main
from hypersdk_auditproof.verify import verify_bundle
from tests.unit.test_auditproof_verify import KEY, LOG, SIZE, TRUSTED, at, bundle


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "bundle.jsonl").write_text("".join(bundle()))
    (tmp_path / "key.pem").write_text(public_key_pem(KEY.public_key()))
    return tmp_path


def run(*args: str | Path) -> int:
    return main([str(arg) for arg in args])


def test_a_valid_bundle_exits_0(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(files / "bundle.jsonl", "--public-key", files / "key.pem") == 0
    out, err = capsys.readouterr()
    counted = f"{SIZE} entries (sequences 1 to {SIZE}), 6 checkpoints, the newest at size {SIZE}"
    assert out == f"VALID: {counted}\n"
    assert err == ""


def test_without_a_public_key_the_cli_warns(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(files / "bundle.jsonl") == 0
    out, err = capsys.readouterr()
    assert out.startswith("VALID: ")
    assert err == KEYS_FROM_BUNDLE_WARNING + "\n"


def test_problems_exit_1_one_line_each(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = bundle()
    del lines[at(lines, 7)]
    del lines[at(lines, 200) :]
    (files / "bundle.jsonl").write_text("".join(lines))
    assert run(files / "bundle.jsonl", "--public-key", files / "key.pem") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("INVALID: 2 problems in 198 entries (sequences 1 to 199)")
    assert out[1].startswith("entries_missing at sequence 7: sequence 7 is missing")
    assert out[2].startswith("log_truncated at sequence 200: ")
    assert len(out) == 3


def test_json_output_is_the_report(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(files / "bundle.jsonl", "--public-key", files / "key.pem", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == verify_bundle(bundle(), keys=TRUSTED).to_json()


def test_witnessed_checkpoints_from_files(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = bundle(checkpoints=LOG.checkpoints[:-1])
    (files / "bundle.jsonl").write_text("".join(lines[: at(lines, 251)]))
    (files / "one.json").write_text(json.dumps(LOG.checkpoints[-1].to_json()))
    (files / "list.json").write_text(json.dumps([c.to_json() for c in LOG.checkpoints[:2]]))
    key: list[str | Path] = ["--public-key", files / "key.pem"]
    assert run(files / "bundle.jsonl", *key, "--checkpoint", files / "list.json") == 0
    assert run(files / "bundle.jsonl", *key, "--checkpoint", files / "one.json", "--json") == 1
    outputs = capsys.readouterr().out
    report = json.loads(outputs[outputs.index("{") :])
    assert [problem["code"] for problem in report["problems"]] == ["log_truncated"]


def test_several_public_keys(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (files / "other.pem").write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    keys: list[str | Path] = [
        "--public-key",
        files / "other.pem",
        "--public-key",
        files / "key.pem",
    ]
    assert run(files / "bundle.jsonl", *keys) == 0
    assert run(files / "bundle.jsonl", "--public-key", files / "other.pem") == 1
    assert "checkpoint_unknown_key" in capsys.readouterr().out


def test_unanchored_entries_are_noted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b.jsonl").write_text("".join(bundle(checkpoints=LOG.checkpoints[:1])))
    assert run(tmp_path / "b.jsonl") == 0
    assert (
        f"note: sequences 51 to {SIZE} come after the newest checkpoint" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.jsonl"], "cannot read the bundle missing.jsonl"),
        (["."], "cannot read the bundle ."),
        (["bundle.jsonl", "--public-key", "missing.pem"], "cannot read the public key"),
        (["bundle.jsonl", "--public-key", "bundle.jsonl"], "not a PEM public key"),
        (["bundle.jsonl", "--checkpoint", "bundle.jsonl"], "not a signed checkpoint"),
        (["bundle.jsonl", "--checkpoint", "key.pem"], "not a signed checkpoint"),
        (["bundle.jsonl", "--checkpoint", "nowhere.json"], "cannot read the checkpoint file"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(
    files: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(files)
    assert main(arguments) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("hypersdk-audit-verify: ")
    assert message in err
    assert "Traceback" not in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["a", "--no-such-option"]) == 2
    assert "usage: hypersdk-audit-verify" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_the_module_reads_stdin(files: Path) -> None:
    command = [sys.executable, "-m", "hypersdk_auditproof", "-", "--public-key", "key.pem"]
    genuine = (files / "bundle.jsonl").read_bytes()
    result = subprocess.run(command, input=genuine, capture_output=True, cwd=files, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"VALID: ")
    result = subprocess.run(
        command, input=genuine[:-500], capture_output=True, cwd=files, check=False
    )
    assert result.returncode == 1
    assert b"malformed" in result.stdout
    result = subprocess.run([*command[:3], "nowhere"], capture_output=True, cwd=files, check=False)
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr


def test_the_package_imports_nothing_else_of_hypersdk() -> None:
    code = (
        "import sys, hypersdk_auditproof.cli, hypersdk_auditproof.verify;"
        "print(sorted(m for m in sys.modules if m.startswith('hypersdk')"
        " and not m.startswith('hypersdk_auditproof')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stdout == b"[]\n"
