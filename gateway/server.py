"""``berth gateway``: API Gateway HTTP API on this machine, from the same OpenAPI document.

A raw ASGI app served by uvicorn (uvloop, httptools). For each request, in API Gateway's order:
CORS preflight -> route -> body size by ``Content-Length`` -> JWT authorizer (protected routes) ->
rate limits (per IP, per user) -> body (cut off at the limit) -> the function, invoked in its own
process with a payload 2.0 event -> its answer, with ``apigw-requestid``, ``x-request-id``, the
``RateLimit-*`` and the CORS headers -> one access log line on stdout.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from gateway import cors
from gateway.access_log import AccessRecord, write_access_line
from gateway.authorizer import AuthorizerUnavailable, JwtAuthorizer, jwks_path_of
from gateway.events import (
    GatewayResponse,
    build_event,
    combine_headers,
    decode_response,
    scopes_of,
    stringify_claims,
)
from gateway.function_pool import FunctionPool
from gateway.metrics import GatewayMetrics
from gateway.rate_limit import Bucket, Decision, RateLimiter
from gateway.routes import RouteTable
from gateway.settings import GatewaySettings, get_gateway_settings
from gateway.spec import (
    GatewaySpec,
    JwtAuthorizerSpec,
    Operation,
    SpecError,
    apply_operator_overrides,
    load_gateway_spec,
)
from shared.cache import KeySpace, get_redis
from shared.errors import BadRequest, BerthError, NotFound, PayloadTooLarge, Unauthorized, error_body
from shared.observability import get_logger, log_event
from shared.plan_rate_limits import get_plan_rate_limits

logger = get_logger("gateway")
JSON_CONTENT_TYPE = "application/json"


class ClientDisconnected(Exception):
    """The client went away before sending its whole body; nobody is left to answer."""


def spec_parameters(settings: GatewaySettings) -> dict[str, str]:
    """What ``Ref``/``Fn::Sub`` resolve to locally (the SAM template's parameters and pseudo parameters)."""
    return {
        "JwtIssuer": settings.jwt_issuer,
        "JwtAudience": settings.jwt_audience,
        "AWS::Region": settings.aws_region,
        "AWS::Partition": "aws",
        "AWS::AccountId": "000000000000",
        "AWS::StackName": "berth-local",
        "AWS::URLSuffix": "amazonaws.com",
    }


def load_effective_spec(settings: GatewaySettings) -> GatewaySpec:
    """The document and template named by the settings, with the operator's overrides applied."""
    spec = load_gateway_spec(settings.gateway_spec, settings.gateway_template, spec_parameters(settings))
    return apply_operator_overrides(
        spec,
        per_ip=settings.gateway_rate_limit_per_ip,
        per_user=settings.gateway_rate_limit_per_user,
        window_seconds=settings.gateway_rate_limit_window_seconds,
        default_max_body_bytes=settings.gateway_max_body_bytes,
    )


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> GatewayResponse:
    response = GatewayResponse(
        status, [("content-type", JSON_CONTENT_TYPE)], json.dumps(body, separators=(",", ":")).encode()
    )
    for name, value in (headers or {}).items():
        response.set_header(name.lower(), value)
    return response


def error_response(error: BerthError, request_id: str) -> GatewayResponse:
    return _json_response(error.status, error_body(error.code, error.message, request_id), error.headers)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or ``PayloadTooLarge`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds this route's limit of {limit} bytes.")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Gateway:
    """The gateway as an ASGI app: routes, authorizes, limits and invokes per ``spec``."""

    def __init__(self, settings: GatewaySettings, spec: GatewaySpec, *, scheme: str = "http") -> None:
        self.settings = settings
        self.spec = spec
        self.scheme = scheme
        self.routes: RouteTable[Operation] = RouteTable(spec.operations)
        self.pools = {
            logical_id: FunctionPool(
                function, max_instances=settings.gateway_function_concurrency, region=settings.aws_region
            )
            for logical_id, function in spec.functions.items()
        }
        self.authorizers = {
            name: JwtAuthorizer(authorizer, self._jwks_fetcher(authorizer))
            for name, authorizer in spec.authorizers.items()
        }
        self.keys = KeySpace(settings.redis_prefix)
        self.limiter: RateLimiter | None = None
        self.metrics = GatewayMetrics(
            settings.gateway_state_dir / f"function-metrics-{os.getpid()}",
            lambda: {logical_id: pool.cold_starts for logical_id, pool in self.pools.items()},
        )
        # Function instances write their own request metrics where the gateway's /metrics reads them.
        for pool in self.pools.values():
            pool.set_environment({**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics.function_metrics_dir)})

    # --- lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        metrics_port = self.metrics.serve(self.settings.gateway_admin_address, self.settings.gateway_admin_port)
        if metrics_port is not None:
            log_event(
                logger, "gateway metrics listening", address=self.settings.gateway_admin_address, port=metrics_port
            )
        client = get_redis(self.settings.redis_url)
        self.limiter = RateLimiter(client, self.keys)
        try:
            await client.ping()
        except (RedisError, OSError):
            # Not fatal: Redis may come up later. Until then rate-limited routes answer 503.
            logger.warning("Redis is unreachable: rate-limited routes answer 503 until it is back")

    async def shutdown(self) -> None:
        for pool in self.pools.values():
            await pool.close()
        await get_redis(self.settings.redis_url).aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- requests --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._serve_http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _caller_request_id(scope["headers"]) or uuid.uuid4().hex
        raw_path_bytes = scope.get("raw_path")
        raw_path = raw_path_bytes.decode("latin-1") if raw_path_bytes else quote(scope["path"])
        client = scope.get("client")
        record = AccessRecord(request_id, client[0] if client else "-", scope["method"], raw_path, time.perf_counter())
        headers, cookies = combine_headers(scope["headers"])
        extra_headers: dict[str, str] = {}
        policy = self.spec.cors
        preflight = False
        try:
            if policy is not None and cors.is_preflight(record.method, headers):
                preflight = True
                response = GatewayResponse(204, cors.preflight_headers(policy, headers))
            else:
                response = await self._respond(scope, receive, headers, cookies, record, extra_headers)
        except ClientDisconnected:
            write_access_line(record.line(499, 0))
            return
        except BerthError as exc:
            response = error_response(exc, request_id)
        except Exception:
            logger.exception("gateway error", extra={"request_id": request_id, "route": record.route})
            response = error_response(
                BerthError("The gateway failed to handle the request; quote the request id if it keeps happening."),
                request_id,
            )
        for name, value in extra_headers.items():
            if response.header(name.lower()) is None:
                response.headers.append((name.lower(), value))
        if policy is not None and not preflight:
            # As API Gateway does once CORS is configured: the document's policy, not the function's.
            response.headers = [(k, v) for k, v in response.headers if not k.startswith("access-control-")]
            response.headers.extend(cors.response_headers(policy, headers.get("origin")))
        response.set_header("apigw-requestid", request_id)
        response.set_header("x-request-id", request_id)
        response.headers.append(("content-length", str(len(response.body))))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (name.encode("latin-1"), value.encode("latin-1", "replace")) for name, value in response.headers
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})
        write_access_line(record.line(response.status, len(response.body)))
        self.metrics.observe(record.route, record.function, response.status, time.perf_counter() - record.started)

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        cookies: list[str],
        record: AccessRecord,
        extra_headers: dict[str, str],
    ) -> GatewayResponse:
        method = record.method
        match = self.routes.match(method, record.path)
        if match is None:
            raise NotFound(f"No route matches {method} {record.path}.")
        operation = match.route
        record.route = operation.route_key
        record.function = operation.function
        limit = operation.max_body_bytes or self.settings.gateway_max_body_bytes
        _check_content_length(headers.get("content-length"), limit)

        claims: dict[str, Any] | None = None
        if operation.authorizer is not None:
            try:
                claims = await self.authorizers[operation.authorizer].authorize(headers)
            except Unauthorized:
                # A refused token still counts against its IP, so guessing tokens is rate limited too.
                await self._enforce_limits(operation, record.ip, None, extra_headers)
                raise
            record.user = str(claims.get("sub", "-"))
        plan = str(claims.get("plan") or "") if claims else None
        counted = await self._enforce_limits(
            operation, record.ip, record.user if claims else None, extra_headers, plan=plan
        )

        body = await read_body(receive, limit)
        event_headers = dict(headers)
        forwarded_for = headers.get("x-forwarded-for")
        event_headers["x-forwarded-for"] = f"{forwarded_for}, {record.ip}" if forwarded_for else record.ip
        event_headers["x-forwarded-proto"] = self.scheme
        server = scope.get("server")
        if server and server[1]:
            event_headers["x-forwarded-port"] = str(server[1])
        event = build_event(
            method=method,
            raw_path=record.path,
            raw_query=scope["query_string"].decode("latin-1"),
            headers=event_headers,
            cookies=cookies,
            body=body,
            route_key=operation.route_key,
            path_parameters=match.path_parameters,
            source_ip=record.ip,
            request_id=record.request_id,
            protocol=f"HTTP/{scope.get('http_version', '1.1')}",
            claims=stringify_claims(claims) if claims is not None else None,
            scopes=scopes_of(claims) if claims is not None else None,
            rate_limits_counted=counted,
        )
        result = await self.pools[operation.function].invoke(
            event, request_id=uuid.uuid4().hex, time_limit=self._timeout(operation)
        )
        return decode_response(result)

    def _timeout(self, operation: Operation) -> float:
        candidates = [self.settings.gateway_function_timeout_seconds, operation.timeout_ms / 1000]
        function_timeout = self.spec.functions[operation.function].timeout_seconds
        if function_timeout:
            candidates.append(function_timeout)
        return min(candidates)

    async def _enforce_limits(
        self, operation: Operation, ip: str, user: str | None, extra_headers: dict[str, str], plan: str | None = None
    ) -> bool:
        """Count the request against its buckets (429 past a limit); True when the gateway counted it, so
        the function behind it does not count it again. The per-user limit is the caller's plan's figure
        under the route's as ceiling (``shared.plan_rate_limits``)."""
        if not self.settings.gateway_rate_limits:
            return False
        buckets: list[Bucket] = []
        per_ip, per_user = operation.throttling.per_ip, operation.throttling.per_user
        if per_ip is not None:
            buckets.append(Bucket("ip", ip, per_ip.limit, per_ip.window_seconds, per_ip.scope))
        if per_user is not None and user is not None:
            plans = get_plan_rate_limits(self.settings.database_url)
            limit = await plans.per_user_limit(plan, per_user.limit, per_user.window_seconds)
            buckets.append(Bucket("user", user, limit, per_user.window_seconds, per_user.scope))
        if not buckets:
            return True  # the route has no limits: nothing for the function to count either
        assert self.limiter is not None, "startup() creates the limiter"
        decision: Decision = await self.limiter.hit(buckets)
        decision.raise_if_refused()
        extra_headers.update(decision.headers())
        return True

    def _jwks_fetcher(self, authorizer: JwtAuthorizerSpec) -> Callable[[], Awaitable[dict[str, Any]]]:
        """Reads the issuer's JWKS by invoking the function behind its route, as the gateway's own
        client: no HTTP round trip, no rate limit, no authorizer."""
        path = jwks_path_of(authorizer.issuer)
        match = self.routes.match("GET", path)
        if match is None:
            raise SpecError(
                f"authorizer {authorizer.name}: no route serves GET {path}, where the "
                f"issuer {authorizer.issuer} publishes its keys"
            )
        operation = match.route
        if operation.protected:
            raise SpecError(f"authorizer {authorizer.name}: GET {path} must be public")
        pool = self.pools[operation.function]

        async def fetch() -> dict[str, Any]:
            request_id = uuid.uuid4().hex
            event = build_event(
                method="GET",
                raw_path=path,
                raw_query="",
                cookies=[],
                body=b"",
                headers={
                    "host": f"{self.settings.gateway_host}:{self.settings.gateway_port}",
                    "accept": JSON_CONTENT_TYPE,
                    "user-agent": "berth-gateway-authorizer",
                },
                route_key=operation.route_key,
                path_parameters=match.path_parameters,
                source_ip="127.0.0.1",
                request_id=request_id,
                # The gateway's own call: no client to count it against, so the function must not either.
                rate_limits_counted=True,
            )
            try:
                response = decode_response(
                    await pool.invoke(event, request_id=request_id, time_limit=self._timeout(operation))
                )
                document = json.loads(response.body) if response.status == 200 else None
            except (BerthError, ValueError) as exc:
                raise AuthorizerUnavailable(f"The signing keys could not be read from GET {path}.") from exc
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise AuthorizerUnavailable(f"GET {path} did not answer a JWKS.")
            log_event(
                logger, "signing keys read", kids=[key.get("kid") for key in document["keys"] if isinstance(key, dict)]
            )
            return document

        return fetch


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _caller_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's ``X-Request-Id`` when it is a safe token (kept through the function, its jobs and the
    worker's log lines); None otherwise (the gateway makes one)."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


def _check_content_length(value: str | None, limit: int) -> None:
    if value is None:
        return
    if not value.isdigit():
        raise BadRequest("The Content-Length header is not a number.")
    if int(value) > limit:
        raise PayloadTooLarge(f"The request body ({value} bytes) exceeds this route's limit of {limit} bytes.")


def describe(gateway: Gateway, url: str) -> str:
    """What runs where, printed at start."""
    settings, spec = gateway.settings, gateway.spec
    lines = [
        f"berth gateway listening on {url}",
        f"  document {settings.gateway_spec}",
        f"  template {settings.gateway_template}",
    ]
    for logical_id, function in spec.functions.items():
        routes = [op.route_key for op in spec.operations if op.function == logical_id]
        lines.append(
            f"  {logical_id}: {function.handler}, {len(routes)} route(s), up to "
            f"{settings.gateway_function_concurrency} instance(s), started on first use"
        )
    for name, authorizer in spec.authorizers.items():
        lines.append(
            f"  authorizer {name}: issuer {authorizer.issuer}, audience "
            f"{', '.join(authorizer.audiences)}, keys from GET {jwks_path_of(authorizer.issuer)}"
        )
    policies = sorted(
        {
            f"{kind} {throttle.limit}/{throttle.window_seconds}s"
            + ("" if throttle.scope == "*" else f" on {throttle.scope}")
            for op in spec.operations
            for kind, throttle in (("per IP", op.throttling.per_ip), ("per user", op.throttling.per_user))
            if throttle
        }
    )
    if settings.gateway_rate_limits:
        lines.append(f"  rate limits (Redis, fail closed): {'; '.join(policies) or 'none'}")
    else:
        lines.append("  rate limits: off here (BERTH_GATEWAY_RATE_LIMITS=false); the functions count them")
    lines.append("  access log: one JSON line per request on stdout")
    return "\n".join(lines)


def run_gateway(host: str | None = None, port: int | None = None, tls: bool | None = None) -> int:
    """Serve the gateway until SIGTERM/SIGINT (first one drains, second forces); the exit status."""
    import uvicorn

    from gateway.tls import ensure_self_signed_certificate

    settings = get_gateway_settings()
    logger.setLevel(settings.log_level.upper())
    host = host or settings.gateway_host
    port = port or settings.gateway_port
    tls = settings.gateway_tls if tls is None else tls
    scheme = "https" if tls else "http"
    try:
        gateway = Gateway(
            settings.model_copy(update={"gateway_host": host, "gateway_port": port}),
            load_effective_spec(settings),
            scheme=scheme,
        )
    except SpecError as exc:
        print(f"berth gateway: {exc}", file=sys.stderr)
        return 2
    ssl: dict[str, Any] = {}
    if tls:
        paths = ensure_self_signed_certificate(settings.gateway_state_dir)
        ssl = {"ssl_certfile": str(paths.certificate), "ssl_keyfile": str(paths.private_key)}
    config = uvicorn.Config(
        gateway,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        backlog=2048,
        # Draining waits for in-flight invocations, which end by their timeout at the latest.
        timeout_graceful_shutdown=int(settings.gateway_function_timeout_seconds) + 5,
        **ssl,
    )
    server = uvicorn.Server(config)
    print(
        describe(gateway, f"{scheme}://{host}:{port}")
        + (f"\n  TLS: self-signed certificate {ssl['ssl_certfile']}" if tls else ""),
        file=sys.stderr,
        flush=True,
    )
    server.run()
    return 0 if server.started else 1
