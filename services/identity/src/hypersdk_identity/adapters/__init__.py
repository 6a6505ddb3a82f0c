"""adapters of the identity service."""
