"""Entry point: python -m hypersdk_audit."""

from hypersdk_audit.cli import main

main()
