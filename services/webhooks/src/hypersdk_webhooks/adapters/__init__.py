"""Adapters of the webhooks service."""
