"""ports of the audit service."""
