"""HyperSDK identity service: users, passwords and sessions."""
