"""Entry point: python -m hypersdk_exporter."""

from hypersdk_exporter.cli import main

main()
