"""Finding a request's route without trying every route of the API (decision 0042).

Starlette and FastAPI route a request by trying each route's regular expression in turn, and
the API has about sixty: under load that scan was about a tenth of the gateway's CPU per call.
A route's path begins with literal segments (``/api/v1/jobs/{job_id}`` with ``api``, ``v1``,
``jobs``), and no request can match it unless its path begins with the same ones. So the
routes are indexed by up to their first ``KEY_SEGMENTS`` literal segments, and a request is
tried only against the routes whose literal segments its own path begins with, in the order
of the route table: the first of them that matches fully is the one the full scan would have
chosen. Anything else (no full match among them, a route of another kind, a ``root_path``,
a match that carries more than a plain route's scope) goes to the application's own router,
unchanged: 404, 405 and slash redirects are its business.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

KEY_SEGMENTS = 3
"""Literal path segments a route is indexed by (``/api/v1/<resource>``)."""
MAX_CACHED_KEYS = 1024
"""Request keys whose merged candidate lists are kept; clients choose paths, so it is bounded."""
_PLAIN_MATCH = frozenset({"endpoint", "path_params", "route"})
"""What a plain route's match adds to the scope (Starlette's two keys and FastAPI's route)."""


def literal_key(path: str) -> tuple[str, ...]:
    """The first literal segments of a route's path, up to ``KEY_SEGMENTS``."""
    key: list[str] = []
    for segment in path.split("/")[1 : KEY_SEGMENTS + 1]:
        if "{" in segment:
            break
        key.append(segment)
    return tuple(key)


class RouteIndex:
    """The routes of a table that a request path can match, in the table's order."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._by_key: dict[tuple[str, ...], list[tuple[int, BaseRoute]]] = {}
        self._everywhere: list[tuple[int, BaseRoute]] = []
        for position, route in enumerate(routes):
            if isinstance(route, Route):
                self._by_key.setdefault(literal_key(route.path), []).append((position, route))
            else:  # a mount, a websocket route, a host: no literal path to index it by
                self._everywhere.append((position, route))
        self._cache: dict[tuple[str, ...], list[BaseRoute]] = {}

    def candidates(self, path: str) -> list[BaseRoute]:
        """Every route that could match ``path`` fully, in table order (maybe more)."""
        segments = tuple(path.split("/")[1 : KEY_SEGMENTS + 1])
        cached = self._cache.get(segments)
        if cached is not None:
            return cached
        found = list(self._everywhere)
        for length in range(len(segments) + 1):
            found += self._by_key.get(segments[:length], ())
        found.sort(key=lambda entry: entry[0])
        routes = [route for _, route in found]
        if found and len(self._cache) < MAX_CACHED_KEYS:
            self._cache[segments] = routes
        return routes

    def route_of(self, scope: Scope) -> BaseRoute | None:
        """The route that matches the request (fully, else partially, as Starlette picks)."""
        partial = None
        for route in self.candidates(scope["path"]):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route
        return partial


Dispatch = Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]


def indexed(router_app: ASGIApp, *, router: object, routes: Sequence[BaseRoute]) -> Dispatch:
    """``router_app`` (a router's dispatch) that tries only the routes a path can match.

    The request is handed to the route the full scan would choose, with the same scope; a
    request the index cannot settle goes to ``router_app`` itself.
    """
    index = RouteIndex(routes)

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            for route in index.candidates(scope["path"]):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    if child_scope.keys() <= _PLAIN_MATCH:
                        scope.setdefault("router", router)
                        scope.update(child_scope)
                        await route.handle(scope, receive, send)
                        return
                    break  # a match of FastAPI's own kinds: its router knows what to do
        await router_app(scope, receive, send)

    return dispatch
