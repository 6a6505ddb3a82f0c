"""HyperSDK audit service: the hash-chained audit log."""
