"""The local gateway's Prometheus metrics, on its admin port (``BERTH_GATEWAY_ADMIN_PORT``; 0: none).

The gateway's own figures (requests by route, function and status; latency; rate-limit refusals; cold
starts of function instances) and, aggregated from their multiprocess files, those the function instances
record themselves (shared.request_metrics): each instance process writes into ``function_metrics_dir``,
which the pools hand them as ``PROMETHEUS_MULTIPROC_DIR``. The gateway process itself never sets it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from shared.observability import get_logger, log_event

logger = get_logger("gateway")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _ColdStarts(Collector):
    def __init__(self, cold_starts: Callable[[], Mapping[str, int]]) -> None:
        self._cold_starts = cold_starts

    def collect(self) -> Iterator[Any]:
        """Instances started per function."""
        family = CounterMetricFamily(
            "berth_gateway_function_cold_starts", "Function instances the gateway started", labels=["function"]
        )
        for function, count in self._cold_starts().items():
            family.add_metric([function], count)
        yield family


class GatewayMetrics:
    def __init__(self, function_metrics_dir: Path, cold_starts: Callable[[], Mapping[str, int]]) -> None:
        # A fresh directory per gateway start: files of a previous run's instances would count twice.
        shutil.rmtree(function_metrics_dir, ignore_errors=True)
        function_metrics_dir.mkdir(parents=True, exist_ok=True)
        self.function_metrics_dir = function_metrics_dir
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "berth_gateway_requests",
            "Requests the gateway answered, by route, function and status",
            ["route", "function", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "berth_gateway_request_duration_seconds",
            "Time from request to answer at the gateway",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "berth_gateway_rate_limited", "Requests refused with 429 (rate limits)", ["route"], registry=self.registry
        )
        self.registry.register(_ColdStarts(cold_starts))
        MultiProcessCollector(self.registry, path=str(function_metrics_dir))

    def observe(self, route: str, function: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, function, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status == 429:
            self.rate_limited.labels(route).inc()

    def serve(self, address: str, port: int) -> int | None:
        """Serve /metrics in a thread of its own; the bound port (None when off or the port is taken)."""
        if port == 0:
            return None
        try:
            server, _ = start_http_server(port, address, registry=self.registry)
        except OSError as exc:
            log_event(logger, "metrics port unavailable; running without metrics", error=str(exc))
            return None
        return int(server.server_port)
