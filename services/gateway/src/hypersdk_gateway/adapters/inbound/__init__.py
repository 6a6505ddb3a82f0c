"""adapters inbound of the gateway service."""
