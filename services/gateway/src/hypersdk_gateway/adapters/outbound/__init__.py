"""adapters outbound of the gateway service."""
