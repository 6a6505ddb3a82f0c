"""core of the exporter service."""
