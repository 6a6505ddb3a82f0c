"""ports of the gateway service."""
