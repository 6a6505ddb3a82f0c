"""Ports of the webhooks service."""
