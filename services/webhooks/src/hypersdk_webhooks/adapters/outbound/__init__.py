"""Outbound adapters of the webhooks service."""
