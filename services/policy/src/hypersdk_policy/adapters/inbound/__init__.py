"""adapters inbound of the policy service."""
