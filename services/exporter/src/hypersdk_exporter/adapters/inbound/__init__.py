"""adapters inbound of the exporter service."""
