"""core of the audit service."""
