"""core of the secrets service."""
