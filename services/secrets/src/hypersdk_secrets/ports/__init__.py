"""ports of the secrets service."""
