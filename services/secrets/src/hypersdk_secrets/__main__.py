"""Entry point: python -m hypersdk_secrets."""

from hypersdk_secrets.cli import main

main()
