"""Entry point: python -m hypersdk_gateway."""

from hypersdk_gateway.cli import main

main()
