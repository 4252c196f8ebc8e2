"""CORS as API Gateway HTTP API applies ``x-amazon-apigateway-cors``.

The gateway answers preflight requests itself, on any path (a 204 with the ``Access-Control-*``
headers when the origin is allowed, without them when it is not), and adds
``Access-Control-Allow-Origin`` and ``-Expose-Headers`` to every other answer for an allowed origin.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.spec import CorsPolicy


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    return method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers


def origin_allowed(policy: CorsPolicy, origin: str | None) -> bool:
    return bool(origin) and ("*" in policy.allow_origins or origin in policy.allow_origins)


def _allow_origin(policy: CorsPolicy, origin: str) -> list[tuple[str, str]]:
    if "*" in policy.allow_origins and not policy.allow_credentials:
        return [("access-control-allow-origin", "*")]
    headers = [("access-control-allow-origin", origin), ("vary", "Origin")]
    if policy.allow_credentials:
        headers.append(("access-control-allow-credentials", "true"))
    return headers


def preflight_headers(policy: CorsPolicy, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers of the 204 answering a preflight (none when the origin is not allowed)."""
    origin = headers.get("origin")
    if origin is None or not origin_allowed(policy, origin):
        return []
    answer = _allow_origin(policy, origin)
    if policy.allow_methods:
        answer.append(("access-control-allow-methods", ",".join(policy.allow_methods)))
    requested_headers = headers.get("access-control-request-headers")
    if "*" in policy.allow_headers and requested_headers:
        answer.append(("access-control-allow-headers", requested_headers))
    elif policy.allow_headers:
        answer.append(("access-control-allow-headers", ",".join(policy.allow_headers)))
    if policy.max_age is not None:
        answer.append(("access-control-max-age", str(policy.max_age)))
    return answer


def response_headers(policy: CorsPolicy, origin: str | None) -> list[tuple[str, str]]:
    """The CORS headers added to an ordinary answer for ``origin``."""
    if origin is None or not origin_allowed(policy, origin):
        return []
    answer = _allow_origin(policy, origin)
    if policy.expose_headers:
        answer.append(("access-control-expose-headers", ",".join(policy.expose_headers)))
    return answer
