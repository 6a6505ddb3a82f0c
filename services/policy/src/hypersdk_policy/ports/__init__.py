"""ports of the policy service."""
