"""The document's ``x-berth-throttling`` limits, enforced by the functions themselves.

API Gateway throttles per route across all callers; it has no per-IP or per-user limits. So every
function app counts the same buckets the local gateway does (``shared.rate_limit``, same Redis keys), read
from the same OpenAPI document, and a deployment on API Gateway keeps its limits.

Count once: the local gateway marks the events of requests it already counted with
``requestContext.<GATEWAY_COUNTED_KEY>``, and a function skips those. The mark lives in the event's
``requestContext``, which only the gateway writes (API Gateway builds it; a client controls headers, never
the request context), so a client cannot claim to have been counted.

The per-user limit is the caller's plan's figure (the token's ``plan`` claim) under the route's limit as the
ceiling, exactly as the gateway computes it (``shared.plan_rate_limits``). A request without the mark (API
Gateway, the local gateway with its limits turned off, a function served alone) is counted by the function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from fastapi import Request

from shared.cache import KeySpace, get_redis
from shared.config import FunctionSettings, get_function_settings
from shared.errors import Unauthorized
from shared.identity import authenticate, client_ip
from shared.plan_rate_limits import get_plan_rate_limits
from shared.rate_limit import GATEWAY_COUNTED_KEY, Bucket, RateLimiter

DEFAULT_WINDOW_SECONDS = 60
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_PARAMETER = re.compile(r"\{[^}]*\}")
# Where a Lambda build puts the document (beside this package), when the source tree's is not there.
PACKAGED_DOCUMENT = Path(__file__).resolve().parent / "openapi.yaml"


@dataclass(frozen=True)
class Limit:
    limit: int
    window_seconds: int
    scope: str  # "*" for the document-wide policy, else the route key that overrides it (as the gateway)


@dataclass(frozen=True)
class RoutePolicy:
    per_ip: Limit | None
    per_user: Limit | None
    protected: bool


def route_shape(path: str) -> str:
    """A path template with its parameters' names dropped: ``/api/x/{id}`` and ``/api/x/{x_id}`` agree."""
    return _PARAMETER.sub("{}", path)


def _limit(block: Any, scope: str) -> Limit | None:
    if not isinstance(block, dict) or not isinstance(block.get("limit"), int):
        return None
    return Limit(int(block["limit"]), int(block.get("windowSeconds", DEFAULT_WINDOW_SECONDS)), scope)


def read_policies(document: dict[str, Any]) -> tuple[RoutePolicy, dict[tuple[str, str], RoutePolicy]]:
    """The document-wide policy and each operation's, keyed by (METHOD, route shape)."""
    root = document.get("x-berth-throttling") or {}
    root_ip, root_user = _limit(root.get("perIp"), "*"), _limit(root.get("perUser"), "*")
    root_security = document.get("security")
    policies: dict[tuple[str, str], RoutePolicy] = {}
    for path, item in (document.get("paths") or {}).items():
        for method, operation in (item or {}).items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            route_key = f"{method.upper()} {path}"
            own = operation.get("x-berth-throttling") or {}
            protected = bool(operation.get("security", root_security))
            policies[(method.upper(), route_shape(path))] = RoutePolicy(
                per_ip=_limit(own.get("perIp"), route_key) or root_ip,
                per_user=(_limit(own.get("perUser"), route_key) or root_user) if protected else None,
                protected=protected,
            )
    return RoutePolicy(root_ip, root_user, bool(root_security)), policies


@lru_cache
def _document_policies(path: Path) -> tuple[RoutePolicy, dict[tuple[str, str], RoutePolicy]]:
    source = path if path.is_file() else PACKAGED_DOCUMENT
    with source.open(encoding="utf-8") as stream:
        return read_policies(yaml.safe_load(stream))


def _override(limit: Limit | None, value: int | None, window: int | None) -> Limit | None:
    if limit is None or (value is None and window is None):
        return limit
    return Limit(value or limit.limit, window or limit.window_seconds, limit.scope)


def policy_for(settings: FunctionSettings, method: str, path_template: str) -> RoutePolicy:
    """The limits of one route, with the operator's overrides applied."""
    root, routes = _document_policies(settings.api_document)
    policy = routes.get((method.upper(), route_shape(path_template)), root)
    return RoutePolicy(
        per_ip=_override(policy.per_ip, settings.rate_limit_per_ip, settings.rate_limit_window_seconds),
        per_user=_override(policy.per_user, settings.rate_limit_per_user, settings.rate_limit_window_seconds),
        protected=policy.protected,
    )


def counted_by_gateway(request: Request) -> bool:
    event = request.scope.get("aws.event") or {}
    return bool((event.get("requestContext") or {}).get(GATEWAY_COUNTED_KEY))


async def enforce_rate_limits(request: Request) -> None:
    """Count the request against its route's per-IP and per-user buckets (429 past a limit), unless the
    gateway in front already did. The ``RateLimit-*`` headers go on the answer (``shared.http_app``)."""
    settings = get_function_settings()
    if not settings.rate_limits_enabled or counted_by_gateway(request):
        return
    route = request.scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None) or request.url.path
    policy = policy_for(settings, request.method, template)
    ip = client_ip(request)
    buckets: list[Bucket] = []
    if policy.per_ip is not None:
        buckets.append(Bucket("ip", ip, policy.per_ip.limit, policy.per_ip.window_seconds, policy.per_ip.scope))
    if policy.per_user is not None:
        try:
            identity = await authenticate(request)
            per_user = policy.per_user
            plans = get_plan_rate_limits(settings.database_url)
            limit = await plans.per_user_limit(identity.plan, per_user.limit, per_user.window_seconds)
            buckets.append(Bucket("user", identity.user_id, limit, per_user.window_seconds, per_user.scope))
        except Unauthorized:
            # Counted against its IP only, so guessing tokens is limited too; the route's own
            # dependency refuses the token with the same 401 right after.
            pass
    if buckets:
        limiter = RateLimiter(get_redis(settings.redis_url), KeySpace(settings.redis_prefix))
        decision = await limiter.hit(buckets)
        decision.raise_if_refused()
        request.scope.setdefault("state", {})["rate_limit_headers"] = decision.headers()
