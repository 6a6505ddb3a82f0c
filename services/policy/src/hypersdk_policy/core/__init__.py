"""core of the policy service."""
