"""``python -m hypersdk_auditproof``: the same as ``hypersdk-audit-verify``."""

from hypersdk_auditproof.cli import main

raise SystemExit(main())
