"""adapters of the gateway service."""
