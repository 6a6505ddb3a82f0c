"""adapters inbound of the audit service."""
