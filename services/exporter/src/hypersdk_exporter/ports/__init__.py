"""ports of the exporter service."""
