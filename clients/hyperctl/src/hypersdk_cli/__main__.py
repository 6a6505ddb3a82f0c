"""Entry point: python -m hypersdk_cli."""

from hypersdk_cli.cli import main

main()
