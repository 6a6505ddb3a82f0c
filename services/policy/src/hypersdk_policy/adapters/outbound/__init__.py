"""adapters outbound of the policy service."""
