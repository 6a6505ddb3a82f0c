"""ports of the identity service."""
