"""The one place where errors become HTTP answers, and the factory every function's app comes from.

Every function is a plain ASGI app (FastAPI); ``lambda_handler`` is the single Mangum line that makes it
a Lambda handler. Requests carry an id: the API Gateway event's ``requestContext.requestId`` when invoked
through a gateway, else the caller's ``X-Request-Id``, else a new one. A request's log lines are kept in its
caller's request trail (``RequestTrailMiddleware``, shared.request_trail).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mangum import Mangum
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.config import get_function_settings
from shared.db import get_database
from shared.errors import BerthError, Details, error_body
from shared.identity import READ_METHODS
from shared.observability import (
    RequestTrail,
    get_logger,
    log_event,
    new_request_id,
    request_id_var,
    trail_var,
    user_id_var,
)
from shared.request_metrics import RequestMetricsMiddleware
from shared.request_trail import RequestTrailStore, keep_trail
from shared.throttling import enforce_rate_limits

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
}


def request_id_from_scope(scope: Scope) -> str:
    event = scope.get("aws.event") or {}
    request_id = (event.get("requestContext") or {}).get("requestId")
    if request_id:
        return str(request_id)
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id" and 0 < len(value) <= 128:
            return value.decode("latin-1")
    return new_request_id()


class RequestIdMiddleware:
    """Sets the request id for logs and error bodies, and echoes it in ``X-Request-Id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from_scope(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        user_token = user_id_var.set("-")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                present = {name.lower() for name, _ in headers}
                # The function's own rate limiter's figures (shared.throttling), on every answer.
                for name, value in (scope["state"].get("rate_limit_headers") or {}).items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            user_id_var.reset(user_token)


class RequestTrailMiddleware:
    """Collects a function's request's ``log_event`` lines and keeps them, with a ``request answered`` line,
    in the caller's trail (see the module's docstring for which requests). Inside ``RequestIdMiddleware``."""

    def __init__(self, app: ASGIApp, function: str) -> None:
        self.app = app
        self.function = function
        self._logger = get_logger(function)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trail = RequestTrail()
        token = trail_var.set(trail)
        started = time.perf_counter()
        status = {"code": 500}

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            try:
                await self.app(scope, receive, observing_send)
            except Exception:
                status["code"] = 500  # answered by the outermost error handler
                await self._keep(scope, trail, status["code"], started)
                raise
            await self._keep(scope, trail, status["code"], started)
        finally:
            trail_var.reset(token)

    async def _keep(self, scope: Scope, trail: RequestTrail, status: int, started: float) -> None:
        state = scope.get("state") or {}
        principal = state.get("principal")
        request_id = state.get("request_id")
        if principal is None or not request_id:
            return  # a caller nobody knows (signing in, public routes): nobody could read it
        method = str(scope.get("method", "")).upper()
        if method in READ_METHODS and not trail.lines and status < 500:
            return
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        log_event(
            self._logger,
            "request answered",
            method=method,
            route=route,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        settings = get_function_settings()
        store = RequestTrailStore(get_database(settings.database_url, settings.database_pool_max))
        await keep_trail(store, str(principal.user_id), str(request_id), "function", self.function, trail)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", None) or request_id_var.get())


def _error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Details | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, _request_id(request), details), status, headers=headers)


def _describe_validation(errors: Iterable[dict[str, Any]]) -> tuple[bool, list[dict[str, Any]]]:
    """(is the body malformed JSON?, [{field, message}]) from FastAPI's validation errors."""
    details: list[dict[str, Any]] = []
    malformed = False
    for error in errors:
        if error.get("type") == "json_invalid":
            malformed = True
        location = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
        message = str(error.get("msg", "is invalid"))
        if error.get("type") == "extra_forbidden":
            message = "is not a known field"
        details.append({"field": ".".join(location) or "body", "message": message})
    return malformed, details


def install_error_handlers(app: FastAPI, service: str) -> None:
    logger = get_logger(service)

    @app.exception_handler(BerthError)
    async def _berth_error(request: Request, exc: BerthError) -> JSONResponse:
        return _error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        malformed, details = _describe_validation(exc.errors())
        if malformed:
            return _error_response(
                request, 400, "invalid_json", "The request body is not valid JSON; send a JSON object."
            )
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        return _error_response(
            request, 422, "validation_failed", f"The request has invalid fields ({summary}).", details
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"No route matches {request.method} {request.url.path}."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        return _error_response(request, exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return _error_response(
            request,
            500,
            "internal_error",
            "Something went wrong on our side; try again, and quote the request id if it keeps happening.",
        )


def create_app(service: str, routers: Iterable[APIRouter], *, title: str | None = None) -> FastAPI:
    """A FastAPI app with the platform's request ids, error shape, rate limits, request metrics
    (shared.request_metrics) and request trails (shared.request_trail), serving ``routers``."""
    app = FastAPI(
        title=title or f"Berth {service}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(enforce_rate_limits)],
    )
    for router in routers:
        app.include_router(router)
    install_error_handlers(app, service)
    app.add_middleware(RequestTrailMiddleware, function=service)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(RequestMetricsMiddleware, function=service)  # outermost: times the whole answer
    return app


def lambda_handler(app: FastAPI) -> Mangum:
    """The Lambda entry point for ``app``: API Gateway HTTP API (payload 2.0) events in, responses out."""
    return Mangum(app, lifespan="off")
