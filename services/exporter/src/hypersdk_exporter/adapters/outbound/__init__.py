"""adapters outbound of the exporter service."""
