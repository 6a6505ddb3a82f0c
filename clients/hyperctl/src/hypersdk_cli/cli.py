"""Entry point of ``hyperctl`` (and ``python -m hypersdk_cli``)."""

from __future__ import annotations

from hypersdk_cli.adapters.inbound.base import new_app
from hypersdk_cli.adapters.inbound.commands import cli


def main(argv: list[str] | None = None) -> None:
    """Run hyperctl with ``argv`` (default: the process's arguments)."""
    cli.main(args=argv, prog_name="hyperctl", obj=new_app(), complete_var="_HYPERCTL_COMPLETE")
