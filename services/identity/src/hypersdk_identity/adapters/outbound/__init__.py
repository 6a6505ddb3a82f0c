"""adapters outbound of the identity service."""
