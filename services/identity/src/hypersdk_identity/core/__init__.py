"""core of the identity service."""
