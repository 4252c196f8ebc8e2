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

if TYPE_CHECKING:
    from lb_runtime.listeners import ListenerState

STATS_WINDOW_SECONDS = 10
LATENCY_SAMPLES = 2048
STATUS_CLASSES = ("error", "1xx", "2xx", "3xx", "4xx", "5xx")

# Upper bounds (seconds) of the latency histogram buckets, Prometheus style.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def latency_bucket(seconds: float) -> int:
    """The histogram bucket of ``seconds``: the first whose bound is not below it (``bisect_left``); a loop from
    the shortest, where nearly every proxied request falls (in C when compiled, without a call or a float)."""
    index = 0
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return index
        index += 1
    return index


class ListenerStats:
    """Requests per second over the last seconds and a ring of recent latencies, for one listener."""

    __slots__ = (
        "_latencies",
        "_latency_index",
        "_second",
        "_second_counts",
        "bytes_in",
        "bytes_out",
        "connections_total",
        "errors",
        "requests",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.connections_total = 0
        # Bytes on the listener's client connections: received from clients (in) and written to them (out), as
        # HTTP (or TCP) bytes: TLS records are not counted. Bumped by the Protocols once per read or write.
        self.bytes_in = 0
        self.bytes_out = 0
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


def listener_figures(listener: ListenerState) -> dict[str, Any]:
    """One listener's raw figures (plain JSON data): what /stats and /metrics are made from, and what a worker
    process reports to its supervisor, which sums them across processes (``merge_figures``)."""
    stats = listener.stats
    now = int(perf_counter())
    if now != stats._second:
        stats._roll(now)
    regions = listener.instance_regions
    return {
        "id": listener.id,
        "port": listener.port,
        "protocol": listener.protocol,
        "algorithm": listener.balancer.algorithm,
        "requests": stats.requests,
        "errors": stats.errors,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "active_connections": len(listener.connections),
        # Requests finished in each of the window's seconds, keyed by the monotonic second (shared by processes).
        "seconds": {str(second): stats._second_counts[second % STATS_WINDOW_SECONDS] for second in _window(now)},
        "latencies": list(stats._latencies),
        "instances": [
            {
                "id": backend.id,
                "address": backend.address,
                "port": backend.port,
                "weight": backend.weight,
                "healthy": backend.healthy,
                "available": backend.available,
                "ejected": backend.ejected_until > time.monotonic(),
                "in_flight": backend.active,
                "status_counts": list(backend.status_counts),
                "bucket_counts": list(backend.bucket_counts),
                "latency_sum": backend.latency_sum,
                "failures": backend.failures,
                "connections_opened": backend.connections_opened,
                "bytes_in": backend.bytes_in,
                "bytes_out": backend.bytes_out,
                "region": regions.get(backend.id),
            }
            for backend in listener.balancer.backends
        ],
    }


def _window(now: int) -> range:
    return range(now - STATS_WINDOW_SECONDS + 1, now + 1)


def merge_figures(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One listener's figures summed over processes: counters add up, latency samples pool, an instance is
    healthy as the (shared) health check says and ejected when any process ejected it."""
    reports = list(reports)
    merged = dict(reports[0]) | {"seconds": {}, "latencies": [], "instances": []}
    for key in ("requests", "errors", "bytes_in", "bytes_out", "active_connections"):
        merged[key] = sum(report[key] for report in reports)
    for report in reports:
        for second, count in report["seconds"].items():
            merged["seconds"][second] = merged["seconds"].get(second, 0) + count
        merged["latencies"].extend(report["latencies"])
    instances: dict[str, dict[str, Any]] = {}
    for report in reports:
        for instance in report["instances"]:
            seen = instances.get(instance["id"])
            if seen is None:
                instances[instance["id"]] = dict(instance)
                continue
            seen["available"] = seen["available"] and instance["available"]
            seen["ejected"] = seen["ejected"] or instance["ejected"]
            for key in ("in_flight", "latency_sum", "failures", "connections_opened", "bytes_in", "bytes_out"):
                seen[key] += instance[key]
            for key in ("status_counts", "bucket_counts"):
                seen[key] = [a + b for a, b in zip(seen[key], instance[key], strict=True)]
    merged["instances"] = list(instances.values())
    return merged


def stats_json(figures: dict[str, Any]) -> dict[str, Any]:
    """One listener's figures as /stats shows them."""
    now = int(perf_counter())
    seconds = figures["seconds"]
    complete = sum(seconds.get(str(second), 0) for second in _window(now - 1))
    samples = sorted(figures["latencies"])

    def quantile(q: float) -> float | None:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 3) if samples else None

    return {
        "id": figures["id"],
        "port": figures["port"],
        "protocol": figures["protocol"],
        "algorithm": figures["algorithm"],
        "rps": round(complete / (STATS_WINDOW_SECONDS - 1), 3),
        "requests": figures["requests"],
        "errors": figures["errors"],
        "bytes_in": figures["bytes_in"],
        "bytes_out": figures["bytes_out"],
        "active_connections": figures["active_connections"],
        "latency_ms": {"p50": quantile(0.50), "p95": quantile(0.95), "p99": quantile(0.99)},
        "instances": [
            {
                "id": instance["id"],
                "address": instance["address"],
                "port": instance["port"],
                "weight": instance["weight"],
                "healthy": instance["healthy"],
                "ejected": instance["ejected"],
                "in_flight": instance["in_flight"],
                "requests": sum(instance["status_counts"]),
                "failures": instance["failures"],
                "bytes_in": instance["bytes_in"],
                "bytes_out": instance["bytes_out"],
                "region": instance.get("region"),
            }
            for instance in figures["instances"]
        ],
        "regions": regional_split(figures["instances"]),
    }


def regional_split(instances: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per region of the instances (lb_runtime.regions): instances, how many take traffic, requests in flight
    and requests served; empty when no instance has a region."""
    split: dict[str, dict[str, int]] = {}
    if not any(instance.get("region") for instance in instances):
        return split
    for instance in instances:
        entry = split.setdefault(
            instance.get("region") or "unknown", {"instances": 0, "healthy": 0, "in_flight": 0, "requests": 0}
        )
        entry["instances"] += 1
        entry["healthy"] += 1 if instance["available"] else 0
        entry["in_flight"] += instance["in_flight"]
        entry["requests"] += sum(instance["status_counts"])
    return split


def listener_stats_json(listener: ListenerState) -> dict[str, Any]:
    """One listener's figures as /stats shows them (one process)."""
    return stats_json(listener_figures(listener))


class LbCollector(Collector):
    """Reads the proxy's figures at scrape time (one process's listeners, or the sum over processes)."""

    def __init__(self, figures: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self._figures = figures

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
        # Bytes as nginx counts them: on the client side per listener ($request_length, $bytes_sent), on the
        # instance side per instance ($upstream_bytes_sent, $upstream_bytes_received).
        received = CounterMetricFamily(
            "berth_lb_received_bytes", "Bytes received from clients (in; TLS not counted)", labels=["listener"]
        )
        sent = CounterMetricFamily(
            "berth_lb_sent_bytes", "Bytes sent to clients (out; TLS not counted)", labels=["listener"]
        )
        upstream_sent = CounterMetricFamily(
            "berth_lb_upstream_sent_bytes", "Bytes sent to the instance (in)", labels=["listener", "instance"]
        )
        upstream_received = CounterMetricFamily(
            "berth_lb_upstream_received_bytes",
            "Bytes received from the instance (out)",
            labels=["listener", "instance"],
        )
        for listener in self._figures():
            active.add_metric([listener["id"]], listener["active_connections"])
            received.add_metric([listener["id"]], listener["bytes_in"])
            sent.add_metric([listener["id"]], listener["bytes_out"])
            for instance in listener["instances"]:
                labels = [listener["id"], instance["id"]]
                for index, count in enumerate(instance["status_counts"]):
                    if count:
                        requests.add_metric([*labels, STATUS_CLASSES[index]], count)
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), instance["bucket_counts"], strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                latency.add_metric(labels, buckets, instance["latency_sum"])
                in_flight.add_metric(labels, instance["in_flight"])
                healthy.add_metric(labels, 1 if instance["available"] else 0)
                failures.add_metric(labels, instance["failures"])
                opened.add_metric(labels, instance["connections_opened"])
                upstream_sent.add_metric(labels, instance["bytes_in"])
                upstream_received.add_metric(labels, instance["bytes_out"])
        yield from (
            requests,
            latency,
            active,
            in_flight,
            healthy,
            failures,
            opened,
            received,
            sent,
            upstream_sent,
            upstream_received,
        )
