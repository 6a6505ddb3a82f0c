"""HyperSDK webhooks: event subscriptions delivered to external systems, signed, SSRF-safe."""
