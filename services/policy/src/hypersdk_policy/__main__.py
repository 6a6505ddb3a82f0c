"""Entry point: python -m hypersdk_policy."""

from hypersdk_policy.cli import main

main()
