"""adapters of the policy service."""
