"""adapters of the secrets service."""
