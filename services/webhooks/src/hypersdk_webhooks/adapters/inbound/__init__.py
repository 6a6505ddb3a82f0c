"""Inbound adapters: the bus (events in, requests), the delivery loop."""
