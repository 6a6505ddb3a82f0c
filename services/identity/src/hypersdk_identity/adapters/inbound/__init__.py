"""adapters inbound of the identity service."""
