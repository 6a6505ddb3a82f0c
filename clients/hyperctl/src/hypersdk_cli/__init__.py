"""hyperctl: the command-line client of the HyperSDK platform (public HTTP API only)."""
