"""HyperSDK policy service: roles, permissions and authorization decisions."""
