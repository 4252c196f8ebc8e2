"""Route matching: API Gateway's rule that the most specific route wins."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.routes import RouteTable, parse_path_template


@dataclass(frozen=True)
class Route:
    method: str
    path: str


ROUTES = [
    Route("POST", "/api/auth/signin"),
    Route("GET", "/api/auth/me"),
    Route("ANY", "/api/images"),
    Route("ANY", "/api/images/{proxy+}"),
    Route("GET", "/api/images/{id}"),
    Route("GET", "/api/images/special"),
    Route("POST", "/api/images/{id}/complete"),
    Route("ANY", "/ui/{proxy+}"),
    Route("GET", "/api/things/{a}/x"),
    Route("GET", "/api/things/y/{b}"),
]
TABLE = RouteTable(ROUTES)


@pytest.mark.parametrize(
    ("method", "path", "route", "parameters"),
    [
        ("POST", "/api/auth/signin", "POST /api/auth/signin", {}),
        ("GET", "/api/auth/me", "GET /api/auth/me", {}),
        # ANY takes every method; a trailing slash does not change the route.
        ("DELETE", "/api/images", "ANY /api/images", {}),
        ("GET", "/api/images/", "ANY /api/images", {}),
        # literal beats {param} beats {proxy+}
        ("GET", "/api/images/special", "GET /api/images/special", {}),
        ("GET", "/api/images/42", "GET /api/images/{id}", {"id": "42"}),
        ("DELETE", "/api/images/42", "ANY /api/images/{proxy+}", {"proxy": "42"}),
        ("POST", "/api/images/42/complete", "POST /api/images/{id}/complete", {"id": "42"}),
        ("GET", "/api/images/42/complete", "ANY /api/images/{proxy+}", {"proxy": "42/complete"}),
        # greedy: every remaining segment, decoded
        ("GET", "/ui/assets/app%20v2.js", "ANY /ui/{proxy+}", {"proxy": "assets/app v2.js"}),
        ("GET", "/api/images/a%2Fb", "GET /api/images/{id}", {"id": "a/b"}),
        # the leftmost literal decides between two templated routes
        ("GET", "/api/things/y/x", "GET /api/things/y/{b}", {"b": "x"}),
        ("GET", "/api/things/z/x", "GET /api/things/{a}/x", {"a": "z"}),
    ],
)
def test_the_most_specific_route_wins(method: str, path: str, route: str, parameters: dict[str, str]) -> None:
    match = TABLE.match(method, path)
    assert match is not None
    assert f"{match.route.method} {match.route.path}" == route
    assert match.path_parameters == parameters


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/auth/signin"),  # known path, wrong method
        ("POST", "/api/auth/me"),
        ("GET", "/api/unknown"),
        ("GET", "/ui"),  # {proxy+} needs at least one segment
        ("GET", "/api/auth/me/extra"),
        ("GET", "/"),
    ],
)
def test_unknown_routes_and_methods_match_nothing(method: str, path: str) -> None:
    assert TABLE.match(method, path) is None


def test_a_greedy_parameter_must_be_last() -> None:
    with pytest.raises(ValueError, match="last segment"):
        parse_path_template("/a/{proxy+}/b")


def test_a_route_defined_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        RouteTable([Route("GET", "/a"), Route("GET", "/a")])
