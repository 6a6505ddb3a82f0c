"""The route index picks the route a full scan of the table would pick, for every route."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute, Match, Mount, Route

from hypersdk_gateway.adapters.inbound.http import build_api
from hypersdk_gateway.adapters.inbound.routing import RouteIndex, indexed, literal_key
from hypersdk_gateway.core.credentials import CredentialCache
from tests.unit.fake_backend import InProcessBackend


async def _never_ready() -> bool:
    return False


def _api() -> Any:
    return build_api(InProcessBackend({}), cache=CredentialCache(ttl_seconds=0), ready=_never_ready)


def _scan(routes: list[BaseRoute], scope: dict[str, Any]) -> BaseRoute | None:
    """What Starlette's router picks: the first full match, else the first partial one."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def _example_paths(path: str) -> list[str]:
    filled = re.sub(r"\{[^}]+\}", "x1", path)
    return [filled, filled + "/", filled + "/more", filled.replace("x1", "a/b")]


def test_the_index_chooses_as_the_full_scan_does_for_every_route_method_and_neighbour() -> None:
    routes = list(_api().router.routes)
    index = RouteIndex(routes)
    paths = {p for r in routes if isinstance(r, Route) for p in _example_paths(r.path)}
    paths |= {"/", "/api", "/api/v1", "/api/v1/", "/nowhere", "//api/v1/jobs", "/API/v1/jobs"}
    checked = 0
    for path in sorted(paths):
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            assert index.route_of(scope) is _scan(routes, scope), (method, path)
            checked += 1
    assert checked > 300


def test_a_route_is_indexed_by_its_literal_segments_only() -> None:
    assert literal_key("/api/v1/jobs/{job_id}/cancel") == ("api", "v1", "jobs")
    assert literal_key("/api/v1/{thing}") == ("api", "v1")
    assert literal_key("/healthz") == ("healthz",)
    assert literal_key("/files/{name}.txt") == ("files",)


def test_the_index_offers_few_candidates_and_keeps_a_bounded_cache() -> None:
    routes = list(_api().router.routes)
    index = RouteIndex(routes)

    assert len(routes) > 40
    assert len(index.candidates("/api/v1/jobs/123")) <= 6
    for n in range(5000):  # paths chosen by clients: the cache does not grow with them
        index.candidates(f"/api/v1/jobs{n}/x")
        index.candidates(f"/{n}")
    assert len(index._cache) <= 1024


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/nowhere", 404),
        ("DELETE", "/healthz", 405),  # the index finds no full match: the router answers
    ],
)
async def test_requests_the_index_cannot_settle_get_the_routers_own_answer(
    method: str, path: str, status: int
) -> None:
    app = _api()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, path)
    assert response.status_code == status
    if status == 405:
        assert "GET" in response.headers["allow"]


def test_the_index_is_installed_in_place_of_the_routers_scan() -> None:
    app = _api()
    assert app.router.middleware_stack != app.router.app
    plain = indexed(app.router.app, router=app.router, routes=app.router.routes)
    assert callable(plain)


async def _endpoint(request: Any) -> None:  # never called: only matched
    raise AssertionError


def test_routes_with_parameters_early_and_mounts_stay_candidates_in_table_order() -> None:
    routes: list[BaseRoute] = [
        Route("/api/v1/{kind}", _endpoint, methods=["GET"]),
        Mount("/api/v1/static", routes=[Route("/{name}", _endpoint)]),
        Route("/api/v1/jobs", _endpoint, methods=["POST"]),
        Route("/{anything:path}", _endpoint, methods=["GET"]),
        Route("/api/v1/jobs", _endpoint, methods=["GET"]),
    ]
    index = RouteIndex(routes)
    for path in ("/api/v1/jobs", "/api/v1/static/a", "/api/v1/other", "/x/y/z/w", "/"):
        for method in ("GET", "POST", "DELETE"):
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            assert index.route_of(scope) is _scan(routes, scope), (method, path)
    assert index.candidates("/api/v1/jobs") == routes
