"""The not-built function: every method and path answers 501 ``not_implemented``, naming the route.

The gateway sends each part of the API that has no function of its own yet here, so a client gets a
clear, well-formed answer instead of a 404 or a gateway error. Each later function takes its routes
over by changing their integration in ``gateway-config/openapi.yaml``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from shared.errors import NotBuiltYet
from shared.http_app import create_app, lambda_handler

SERVICE = "not-built"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

router = APIRouter()


def not_built_message(method: str, path: str, route_key: str | None) -> str:
    """The 501 message: the request, the gateway route it matched (when known), and that it is not built."""
    request = f"{method.upper()} {path}"
    if route_key and route_key != request:
        return f"{request} (route {route_key}) is not built yet in this Berth version."
    return f"{request} is not built yet in this Berth version."


def _route_key(request: Request) -> str | None:
    # Through a gateway, the event names the route it matched (e.g. "ANY /api/images/{proxy+}").
    event = request.scope.get("aws.event") or {}
    route_key = (event.get("requestContext") or {}).get("routeKey")
    return str(route_key) if route_key else None


@router.api_route("/{path:path}", methods=ALL_METHODS, include_in_schema=False)
async def not_built(request: Request) -> None:
    raise NotBuiltYet(not_built_message(request.method, request.url.path, _route_key(request)))


app = create_app(SERVICE, [router])
handler = lambda_handler(app)
