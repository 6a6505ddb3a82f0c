"""Service kit: what every HyperSDK service is built from."""
