"""Contracts shared by every HyperSDK service: bus names, envelopes, messages, permissions."""
