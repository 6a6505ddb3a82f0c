"""Where hyperctl keeps contexts and session tokens: 0600 files in 0700 directories, and
nothing it would have to trust from a place another user can read or write."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hypersdk_cli.adapters.outbound.files import FileConfigStore, config_dir
from hypersdk_cli.core.errors import CliError
from hypersdk_cli.core.models import CliConfig, Context, StoredSession

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SESSION = StoredSession(
    server="https://platform.test",
    username="admin",
    token="tok-very-secret",
    expires_at=NOW + timedelta(hours=12),
    refreshed_at=NOW,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_config_dir_follows_xdg(tmp_path: Path) -> None:
    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "hyperctl"
    assert config_dir({"XDG_CONFIG_HOME": "relative/dir"}) == Path.home() / ".config/hyperctl"
    assert config_dir({}) == Path.home() / ".config/hyperctl"


def test_sessions_and_config_are_written_0600_in_0700_dirs(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a permissive umask must not matter
    try:
        store = FileConfigStore(tmp_path / "hyperctl")
        store.save_session("lab", SESSION)
        store.save_config(
            CliConfig(
                current_context="lab",
                contexts={"lab": Context(name="lab", server="https://platform.test", api_key="k")},
            )
        )
    finally:
        os.umask(old)
    assert _mode(tmp_path / "hyperctl") == 0o700
    assert _mode(tmp_path / "hyperctl" / "sessions") == 0o700
    assert _mode(tmp_path / "hyperctl" / "sessions" / "lab.json") == 0o600
    assert _mode(tmp_path / "hyperctl" / "config.yaml") == 0o600
    assert store.load_session("lab") == SESSION
    assert store.load_config().contexts["lab"].api_key == "k"
    assert not [p for p in (tmp_path / "hyperctl").rglob("*.tmp")]  # atomic: no leftovers


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    store = FileConfigStore(tmp_path / "hyperctl")
    store.save_session("lab", SESSION)
    token_file = tmp_path / "hyperctl" / "sessions" / "lab.json"
    token_file.chmod(0o644)
    with pytest.raises(CliError) as refused:
        store.load_session("lab")
    assert refused.value.code == "insecure_file"
    assert "chmod 600" in refused.value.message
    assert "tok-very-secret" not in refused.value.line()


def test_a_config_dir_others_can_enter_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "hyperctl"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    with pytest.raises(CliError) as refused:
        FileConfigStore(directory).load_config()
    assert "chmod 700" in refused.value.message


def test_a_symlinked_token_file_is_refused(tmp_path: Path) -> None:
    store = FileConfigStore(tmp_path / "hyperctl")
    store.save_session("lab", SESSION)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}")
    elsewhere.chmod(0o600)
    link = tmp_path / "hyperctl" / "sessions" / "other.json"
    link.symlink_to(elsewhere)
    with pytest.raises(CliError) as refused:
        store.load_session("other")
    assert refused.value.code == "insecure_file"


def test_a_context_name_cannot_escape_the_sessions_dir(tmp_path: Path) -> None:
    store = FileConfigStore(tmp_path / "hyperctl")
    with pytest.raises(CliError):
        store.save_session("../../evil", SESSION)
    assert not (tmp_path / "evil.json").exists()


def test_a_damaged_config_is_one_clear_error(tmp_path: Path) -> None:
    store = FileConfigStore(tmp_path / "hyperctl")
    store.save_config(CliConfig())
    path = tmp_path / "hyperctl" / "config.yaml"
    path.write_text("contexts: [1, 2\n")
    with pytest.raises(CliError) as refused:
        store.load_config()
    assert refused.value.code == "bad_config"


def test_the_session_lock_is_exclusive(tmp_path: Path) -> None:
    import fcntl

    store = FileConfigStore(tmp_path / "hyperctl")
    with store.session_lock("lab"):
        lock = tmp_path / "hyperctl" / "sessions" / "lab.lock"
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert _mode(tmp_path / "hyperctl" / "sessions" / "lab.lock") == 0o600
