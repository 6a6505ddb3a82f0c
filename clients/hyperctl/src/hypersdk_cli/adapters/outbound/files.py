"""Contexts in a YAML file and sessions in JSON files, 0600 in 0700 directories.

A file or directory that another user could read or write, or that belongs to someone else,
is refused rather than used: a token must never be read from, or written to, such a place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from hypersdk_cli.core.errors import CliError, ExitCode
from hypersdk_cli.core.models import CliConfig, Context, StoredSession
from hypersdk_cli.ports.outbound import ConfigStore

CONTEXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
CONFIG_FILE = "config.yaml"
SESSIONS_DIR = "sessions"
_CONTEXT_KEYS = {"server": "server", "ca-bundle": "ca_bundle", "pin-sha256": "pin_sha256"}
_API_KEY = "api-key"


def config_dir(environ: dict[str, str] | os._Environ[str]) -> Path:
    """``$XDG_CONFIG_HOME/hyperctl``, else ``~/.config/hyperctl`` (XDG: relative is ignored)."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "hyperctl"


def valid_context_name(name: str) -> str:
    """``name`` if it may name a context (and so a file); CliError otherwise."""
    if not CONTEXT_NAME.match(name):
        raise CliError(
            "invalid_argument",
            "A context name is 1-63 letters, digits, '.', '_' or '-', starting alphanumeric.",
            exit_code=ExitCode.USAGE,
        )
    return name


def _insecure(path: Path, why: str, fix: str) -> CliError:
    return CliError("insecure_file", f"Refusing {path}: {why}; {fix}.")


def _check_owned_private(path: Path, info: os.stat_result, *, directory: bool) -> None:
    if info.st_uid != os.geteuid():
        raise _insecure(path, "it belongs to another user", "remove it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        mode = "700" if directory else "600"
        raise _insecure(
            path,
            f"others may access it (mode {stat.S_IMODE(info.st_mode):o})",
            f"run 'chmod {mode} {path}'",
        )


def _read_private(path: Path) -> bytes | None:
    """The file's bytes if it exists and is the user's own, 0600, not a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink
        raise _insecure(path, "it is a symbolic link or cannot be opened", "replace it") from exc
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _insecure(path, "it is not a regular file", "remove it")
        _check_owned_private(path, info, directory=False)
        return stream.read()


def _write_private(path: Path, data: bytes) -> None:
    """Replace the file atomically with a new 0600 one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class FileConfigStore(ConfigStore):
    """``<directory>/config.yaml`` and ``<directory>/sessions/<context>.json``."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    @property
    def directory(self) -> Path:
        """Where the files are."""
        return self._directory

    def load_config(self) -> CliConfig:
        """The configuration file's contexts (empty if there is no file yet)."""
        raw = _read_private(self._private_dir() / CONFIG_FILE)
        if raw is None:
            return CliConfig()
        try:
            document = yaml.safe_load(raw) or {}
            return _config_of(document)
        except (yaml.YAMLError, TypeError, ValueError, AttributeError) as exc:
            raise CliError(
                "bad_config",
                f"{self._directory / CONFIG_FILE} is not a valid hyperctl configuration.",
            ) from exc

    def save_config(self, config: CliConfig) -> None:
        """Write the configuration file (0600)."""
        document = yaml.safe_dump(_document_of(config), sort_keys=False).encode()
        _write_private(self._private_dir() / CONFIG_FILE, document)

    def load_session(self, context: str) -> StoredSession | None:
        """The stored session of ``context``, if any."""
        raw = _read_private(self._session_file(context))
        if raw is None:
            return None
        try:
            fields: dict[str, Any] = json.loads(raw)
            return StoredSession(
                server=str(fields["server"]),
                username=str(fields["username"]),
                token=str(fields["token"]),
                expires_at=datetime.fromisoformat(fields["expires_at"]),
                refreshed_at=datetime.fromisoformat(fields["refreshed_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CliError(
                "bad_config",
                f"The session file of context {context!r} is damaged: run 'hyperctl login'.",
                exit_code=ExitCode.NOT_AUTHENTICATED,
            ) from exc

    def save_session(self, context: str, session: StoredSession) -> None:
        """Write ``context``'s session file (0600)."""
        fields = {
            "server": session.server,
            "username": session.username,
            "token": session.token,
            "expires_at": session.expires_at.isoformat(),
            "refreshed_at": session.refreshed_at.isoformat(),
        }
        _write_private(self._session_file(context), json.dumps(fields).encode())

    def delete_session(self, context: str) -> None:
        """Remove ``context``'s session file."""
        self._session_file(context).unlink(missing_ok=True)

    @contextlib.contextmanager
    def session_lock(self, context: str) -> Iterator[None]:
        """An exclusive lock (flock) on ``<context>.lock`` next to the session file."""
        lock = self._session_file(context).with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _session_file(self, context: str) -> Path:
        return self._private_dir(SESSIONS_DIR) / f"{valid_context_name(context)}.json"

    def _private_dir(self, *parts: str) -> Path:
        """The directory (created 0700 if missing), refused if another user may enter it."""
        path = self._directory.joinpath(*parts)
        for directory in [self._directory, path] if parts else [path]:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(directory)
            if not stat.S_ISDIR(info.st_mode):
                raise _insecure(directory, "it is not a directory", "remove it")
            _check_owned_private(directory, info, directory=True)
        return path


def _config_of(document: Any) -> CliConfig:
    if not isinstance(document, dict):
        raise TypeError(document)
    contexts: dict[str, Context] = {}
    for name, fields in (document.get("contexts") or {}).items():
        if not isinstance(fields, dict) or not isinstance(fields.get("server"), str):
            raise ValueError(name)
        contexts[str(name)] = Context(
            name=valid_context_name(str(name)),
            server=fields["server"],
            ca_bundle=_optional_text(fields.get("ca-bundle")),
            pin_sha256=_optional_text(fields.get("pin-sha256")),
            api_key=_optional_text(fields.get(_API_KEY)),
        )
    current = document.get("current-context")
    return CliConfig(current_context=str(current) if current else None, contexts=contexts)


def _optional_text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(value)
    return value


def _document_of(config: CliConfig) -> dict[str, Any]:
    contexts: dict[str, Any] = {}
    for name, context in sorted(config.contexts.items()):
        fields = {key: getattr(context, attr) for key, attr in _CONTEXT_KEYS.items()}
        fields[_API_KEY] = context.api_key
        contexts[name] = {key: value for key, value in fields.items() if value is not None}
    return {"current-context": config.current_context, "contexts": contexts}
