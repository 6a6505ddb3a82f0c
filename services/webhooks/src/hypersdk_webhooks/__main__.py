"""Entry point: python -m hypersdk_webhooks."""

from hypersdk_webhooks.cli import main

main()
