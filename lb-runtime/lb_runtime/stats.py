"""Per-listener traffic figures for /stats and the Prometheus collector behind /metrics.

The hot path only bumps plain integers (no locks, no label lookups); the collector turns them into
metric families when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from lb_runtime.backends import LATENCY_BUCKETS

if TYPE_CHECKING:
    from lb_runtime.listeners import ListenerState

STATS_WINDOW_SECONDS = 10
LATENCY_SAMPLES = 2048
STATUS_CLASSES = ("error", "1xx", "2xx", "3xx", "4xx", "5xx")


class ListenerStats:
    """Requests per second over the last seconds and a ring of recent latencies, for one listener."""

    __slots__ = ("_latencies", "_latency_index", "_second", "_second_counts", "connections_total", "errors", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.connections_total = 0
        self._second = int(perf_counter())
        self._second_counts = [0] * STATS_WINDOW_SECONDS
        self._latencies: list[float] = []
        self._latency_index = 0

    def record(self, seconds: float, error: bool, now: float | None = None) -> None:
        """Count one request (or one TCP connection) that took ``seconds`` and ended at ``now`` (perf_counter)."""
        self.requests += 1
        if error:
            self.errors += 1
        second = int(perf_counter() if now is None else now)
        if second != self._second:
            self._roll(second)
        self._second_counts[second % STATS_WINDOW_SECONDS] += 1
        if len(self._latencies) < LATENCY_SAMPLES:
            self._latencies.append(seconds)
        else:
            self._latencies[self._latency_index] = seconds
            self._latency_index = (self._latency_index + 1) % LATENCY_SAMPLES

    def _roll(self, second: int) -> None:
        for skipped in range(self._second + 1, min(second, self._second + STATS_WINDOW_SECONDS) + 1):
            self._second_counts[skipped % STATS_WINDOW_SECONDS] = 0
        self._second = second

    def rps(self) -> float:
        """Mean requests per second over the last complete seconds of the window."""
        now = int(perf_counter())
        if now != self._second:
            self._roll(now)
        complete = sum(self._second_counts) - self._second_counts[now % STATS_WINDOW_SECONDS]
        return complete / (STATS_WINDOW_SECONDS - 1)

    def latency_ms(self) -> dict[str, float | None]:
        """p50, p95 and p99 of the recent latencies, in milliseconds (None before any request)."""
        samples = sorted(self._latencies)
        if not samples:
            return {"p50": None, "p95": None, "p99": None}

        def quantile(q: float) -> float:
            return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 3)

        return {"p50": quantile(0.50), "p95": quantile(0.95), "p99": quantile(0.99)}


def listener_stats_json(listener: ListenerState) -> dict[str, Any]:
    """One listener's figures as /stats shows them."""
    return {
        "id": listener.id,
        "port": listener.port,
        "protocol": listener.protocol,
        "algorithm": listener.balancer.algorithm,
        "rps": round(listener.stats.rps(), 3),
        "requests": listener.stats.requests,
        "errors": listener.stats.errors,
        "active_connections": len(listener.connections),
        "latency_ms": listener.stats.latency_ms(),
        "instances": [
            {
                "id": backend.id,
                "address": backend.address,
                "port": backend.port,
                "weight": backend.weight,
                "healthy": backend.healthy,
                "ejected": backend.ejected_until > time.monotonic(),
                "in_flight": backend.active,
                "requests": sum(backend.status_counts),
                "failures": backend.failures,
            }
            for backend in listener.balancer.backends
        ],
    }


class LbCollector(Collector):
    """Reads the proxy's counters at scrape time."""

    def __init__(self, listeners: Callable[[], Iterable[ListenerState]]) -> None:
        self._listeners = listeners

    def collect(self) -> Iterator[Any]:
        """Yield every lb-runtime metric family."""
        requests = CounterMetricFamily(
            "berth_lb_requests",
            "Requests (tcp: connections) by listener, instance and status class",
            labels=["listener", "instance", "status_class"],
        )
        latency = HistogramMetricFamily(
            "berth_lb_request_duration_seconds", "Request (tcp: connection) duration", labels=["listener", "instance"]
        )
        active = GaugeMetricFamily("berth_lb_active_connections", "Open client connections", labels=["listener"])
        in_flight = GaugeMetricFamily("berth_lb_in_flight", "Requests in flight", labels=["listener", "instance"])
        healthy = GaugeMetricFamily(
            "berth_lb_instance_healthy",
            "1 when the instance takes traffic (healthy, not ejected)",
            labels=["listener", "instance"],
        )
        failures = CounterMetricFamily(
            "berth_lb_upstream_failures", "Failed connects or requests", labels=["listener", "instance"]
        )
        opened = CounterMetricFamily(
            "berth_lb_upstream_connections_opened", "Upstream connections opened", labels=["listener", "instance"]
        )
        for listener in self._listeners():
            active.add_metric([listener.id], len(listener.connections))
            for backend in listener.balancer.backends:
                labels = [listener.id, backend.id]
                for index, count in enumerate(backend.status_counts):
                    if count:
                        requests.add_metric([*labels, STATUS_CLASSES[index]], count)
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), backend.bucket_counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                latency.add_metric(labels, buckets, backend.latency_sum)
                in_flight.add_metric(labels, backend.active)
                healthy.add_metric(labels, 1 if backend.available else 0)
                failures.add_metric(labels, backend.failures)
                opened.add_metric(labels, backend.connections_opened)
        yield from (requests, latency, active, in_flight, healthy, failures, opened)
