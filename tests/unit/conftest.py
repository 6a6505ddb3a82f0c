"""Fixtures shared by several unit test modules."""

from tests.unit.test_gateway_chain import gateway, make_gateway

__all__ = ["gateway", "make_gateway"]
