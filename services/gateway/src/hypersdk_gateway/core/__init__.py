"""core of the gateway service."""
