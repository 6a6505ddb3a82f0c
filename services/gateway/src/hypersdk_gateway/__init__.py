"""HyperSDK gateway service: the public HTTP API and its middleware chain."""
