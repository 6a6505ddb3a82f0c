"""adapters outbound of the secrets service."""
