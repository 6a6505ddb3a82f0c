"""adapters of the exporter service."""
