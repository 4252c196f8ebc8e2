"""Request metrics of every function: requests by route and status, latency, rate-limit refusals, cold starts.

Where they go depends on where the function runs, never on the function:
- behind the local gateway (an instance process of ``gateway.function_pool``): Prometheus multiprocess
  files in ``PROMETHEUS_MULTIPROC_DIR``, which the gateway's admin port aggregates on its /metrics;
- as a plain ASGI app (uvicorn): the process's own registry, answered at ``GET /metrics``;
- on AWS Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set): CloudWatch metrics in the Embedded Metric Format
  (aws-lambda-powertools ``Metrics``), flushed to stdout after each invocation; no /metrics there.
The route label is the route's template (``/api/alerts/rules/{rule_id}``), never the raw path.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
EMF_NAMESPACE = "Berth"

REQUESTS = Counter(
    "berth_function_requests", "Requests a function answered, by route and status", ["function", "route", "status"]
)
LATENCY = Histogram(
    "berth_function_request_duration_seconds",
    "Time a function took to answer",
    ["function", "route"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "berth_function_rate_limited", "Requests a function refused with 429 (its own rate limits)", ["function"]
)
COLD_STARTS = Counter("berth_function_cold_starts", "Function instances initialised (cold starts)", ["function"])


def on_lambda() -> bool:
    """Whether this process is an AWS Lambda execution environment."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def serves_own_metrics() -> bool:
    """Whether GET /metrics is answered in-process (a plain ASGI app, neither Lambda nor the gateway's host)."""
    return not on_lambda() and not os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class _EmfMetrics:
    """The Lambda side: one EMF document per invocation through powertools (imported only on Lambda)."""

    def __init__(self, function: str) -> None:
        from aws_lambda_powertools import Metrics

        self._metrics = Metrics(namespace=EMF_NAMESPACE, service=function)
        self._cold = True

    def record(self, route: str, status: int, seconds: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        metrics = self._metrics
        metrics.add_dimension(name="route", value=route)
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name=f"Status{status // 100}xx", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=seconds * 1000)
        if status == 429:
            metrics.add_metric(name="RateLimited", unit=MetricUnit.Count, value=1)
        if self._cold:
            metrics.add_metric(name="ColdStart", unit=MetricUnit.Count, value=1)
            self._cold = False
        metrics.flush_metrics()


class RequestMetricsMiddleware:
    """Counts and times every HTTP request of one function; answers GET /metrics where that is its job."""

    def __init__(self, app: ASGIApp, function: str) -> None:
        self.app = app
        self.function = function
        self._emf = _EmfMetrics(function) if on_lambda() else None
        self._own_metrics = serves_own_metrics()
        if self._emf is None:
            COLD_STARTS.labels(function).inc()  # the app is built once per instance, in its init phase

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._own_metrics and scope["path"] == "/metrics" and scope["method"] == "GET":
            await _answer_metrics(send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            route = scope.get("route")
            template = str(getattr(route, "path", None) or "unmatched")
            self.record(template, status["code"], time.perf_counter() - started)

    def record(self, route: str, status: int, seconds: float) -> None:
        if self._emf is not None:
            self._emf.record(route, status, seconds)
            return
        REQUESTS.labels(self.function, route, str(status)).inc()
        LATENCY.labels(self.function, route).observe(seconds)
        if status == 429:
            RATE_LIMITED.labels(self.function).inc()


async def _answer_metrics(send: Send) -> None:
    body = generate_latest(REGISTRY)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
