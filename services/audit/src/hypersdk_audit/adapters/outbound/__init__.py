"""adapters outbound of the audit service."""
