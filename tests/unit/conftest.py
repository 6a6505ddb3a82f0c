"""Fixtures shared by several unit test modules."""

from tests.unit.test_gateway_chain import make_gateway

__all__ = ["make_gateway"]
