"""The unprivileged user qemu-img runs as when the tests run as root, and its export directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import devstack
from hypersdk_exporter.adapters.outbound.qemu_img import conversion_identity

CONVERSION_USER = devstack.CONVERSION_USER


def conversion_owner(export_dir: Path) -> tuple[int, int] | None:
    """As root: the conversion user (created if missing) owns ``export_dir`` and can reach it.

    None when the tests do not run as root (qemu-img then runs as the test's own user).
    """
    if os.geteuid() != 0:
        return None
    devstack.conversion_account()
    owner = conversion_identity(CONVERSION_USER)
    assert owner is not None
    for directory in (export_dir.parent, *export_dir.parent.parents):
        directory.chmod(stat.S_IMODE(directory.stat().st_mode) | stat.S_IXOTH)
    os.chown(export_dir, *owner)
    return owner
