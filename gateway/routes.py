"""Route matching as API Gateway HTTP API does it: the most specific route wins.

Routes are ``METHOD /path`` with literal segments, ``{param}`` segments and a greedy ``{proxy+}`` last
segment. Among the routes that match a request, a literal segment beats a ``{param}``, which beats
``{proxy+}``, compared from the left; for the same path an exact method beats ``ANY``.
``RouteTable`` is built once from the spec and never changes; matching a literal path is a dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from urllib.parse import unquote

_LITERAL, _PARAM, _GREEDY = 2, 1, 0


class Routable(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


R = TypeVar("R", bound=Routable)


@dataclass(frozen=True)
class _Segment:
    kind: int
    text: str  # the literal, or the parameter's name


@dataclass(frozen=True)
class RouteMatch(Generic[R]):
    route: R
    path_parameters: dict[str, str]


def parse_path_template(path: str) -> tuple[_Segment, ...]:
    """The segments of ``/a/{b}/{c+}``; a greedy parameter is only allowed last."""
    parts = path.strip("/").split("/") if path.strip("/") else []
    segments: list[_Segment] = []
    for index, part in enumerate(parts):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if name.endswith("+"):
                if index != len(parts) - 1:
                    raise ValueError(f"{path}: a greedy {{{name}}} must be the last segment")
                segments.append(_Segment(_GREEDY, name[:-1]))
            else:
                segments.append(_Segment(_PARAM, name))
        else:
            segments.append(_Segment(_LITERAL, part))
    return tuple(segments)


def _match_segments(segments: tuple[_Segment, ...], parts: list[str]) -> dict[str, str] | None:
    parameters: dict[str, str] = {}
    for index, segment in enumerate(segments):
        if segment.kind == _GREEDY:
            rest = parts[index:]
            if not rest or not "/".join(rest):
                return None
            parameters[segment.text] = unquote("/".join(rest))
            return parameters
        if index >= len(parts):
            return None
        part = parts[index]
        if segment.kind == _LITERAL:
            if part != segment.text:
                return None
        else:
            if not part:
                return None
            parameters[segment.text] = unquote(part)
    return parameters if len(parts) == len(segments) else None


class RouteTable(Generic[R]):
    """An immutable table of routes; ``match`` answers the most specific route for a request."""

    def __init__(self, routes: Iterable[R]) -> None:
        self._literal: dict[tuple[str, str], R] = {}
        templated: list[tuple[tuple[int, ...], int, tuple[_Segment, ...], R]] = []
        seen: set[tuple[str, str]] = set()
        for route in routes:
            key = (route.method.upper(), route.path)
            if key in seen:
                raise ValueError(f"route {route.method} {route.path} is defined twice")
            seen.add(key)
            segments = parse_path_template(route.path)
            if all(segment.kind == _LITERAL for segment in segments):
                self._literal[(route.method.upper(), _normal(route.path))] = route
            else:
                ranks = tuple(segment.kind for segment in segments)
                templated.append((ranks, 0 if route.method.upper() == "ANY" else 1, segments, route))
        # Most specific first, so the first match is the best one.
        templated.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
        self._templated = [(segments, route) for _, _, segments, route in templated]

    def match(self, method: str, raw_path: str) -> RouteMatch[R] | None:
        """The best route for ``method`` and the (still percent-encoded) ``raw_path``, if any."""
        path = _normal(raw_path)
        route = self._literal.get((method, path)) or self._literal.get(("ANY", path))
        if route is not None:
            return RouteMatch(route, {})
        parts = path.strip("/").split("/")
        for segments, candidate in self._templated:
            if candidate.method != method and candidate.method != "ANY":
                continue
            parameters = _match_segments(segments, parts)
            if parameters is not None:
                return RouteMatch(candidate, parameters)
        return None


def _normal(path: str) -> str:
    return path if path == "/" else path.rstrip("/") or "/"
