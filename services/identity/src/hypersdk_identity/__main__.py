"""Entry point: python -m hypersdk_identity."""

from hypersdk_identity.cli import main

main()
