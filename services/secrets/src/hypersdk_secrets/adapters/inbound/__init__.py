"""adapters inbound of the secrets service."""
