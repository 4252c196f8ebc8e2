"""Listener traffic history: what one reading of lb-runtime's Prometheus figures holds, the per-interval
deltas between two readings, and latency percentiles from bucket counts. Pure functions: the host worker
records with them (worker.traffic_recorder), the load-balancer function and the alert evaluator read with them.

A reading is cumulative: requests by listener, instance and status class, a latency histogram per instance,
open connections per listener, and bytes in (toward the instances) and out (toward the clients): a listener's
are lb-runtime's counts on its client connections (what the clients sent and received), an instance's its
counts on the connections to that instance (the two differ by the headers the proxy adds and strips, so a
listener's bytes are its own figure, never the sum of its instances'). A delta is ``current - previous`` per
counter; a counter below its previous value means lb-runtime restarted (its counters start again from zero),
so the delta is the current value. Bytes are judged on their own: their counter below its previous value, or
the requests' reset, starts them from zero.
Host routes of the shared ports (shared.host_routes) are reported under ids of their own; their deltas are
folded into the listener that owns the host name (``fold_routes``), so a listener's history holds its own
port's traffic and its host names' together. Folding comes after the deltas: each reported id keeps its own
counters in the recorder's cursor, so a route that appears or goes away never reads as a reset of another.
Latency buckets are re-binned onto ``LATENCY_BOUNDS`` (Berth's own history buckets, in seconds): the
cumulative count at a bound is lb-runtime's cumulative count at its largest ``le`` not above it, exact
whenever lb-runtime's buckets include the bound, as they do today.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from shared.host_routes import owning_listener

LATENCY_BOUNDS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BUCKET_COUNT = len(LATENCY_BOUNDS) + 1  # the last one is +Inf
# The resolutions kept and how long: 10 s for a day, 1 min for 30 days.
RESOLUTIONS: dict[int, int] = {10: 24 * 3600, 60: 30 * 24 * 3600}
LISTENER_TOTAL = ""  # the instance name of a listener's own figures


@dataclass
class Figures:
    """One listener's or instance's counters (cumulative in a reading, per interval in a delta)."""

    requests: int = 0
    errors_connect: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * BUCKET_COUNT)
    latency_sum: float = 0.0
    open_connections: int = 0  # a gauge: the reading's value, never a delta
    bytes_in: int = 0  # received from clients (a listener) or sent to the instance (an instance)
    bytes_out: int = 0  # sent to clients (a listener) or received from the instance (an instance)

    def as_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors_connect": self.errors_connect,
            "responses_4xx": self.responses_4xx,
            "responses_5xx": self.responses_5xx,
            "latency_buckets": self.latency_buckets,
            "latency_sum": self.latency_sum,
            "open_connections": self.open_connections,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Figures:
        buckets = data.get("latency_buckets")
        return cls(
            requests=int(data.get("requests", 0)),  # type: ignore[call-overload]
            errors_connect=int(data.get("errors_connect", 0)),  # type: ignore[call-overload]
            responses_4xx=int(data.get("responses_4xx", 0)),  # type: ignore[call-overload]
            responses_5xx=int(data.get("responses_5xx", 0)),  # type: ignore[call-overload]
            latency_buckets=[int(v) for v in buckets] if isinstance(buckets, list) else [0] * BUCKET_COUNT,
            latency_sum=float(data.get("latency_sum", 0.0)),  # type: ignore[arg-type]
            open_connections=int(data.get("open_connections", 0)),  # type: ignore[call-overload]
            bytes_in=int(data.get("bytes_in", 0)),  # type: ignore[call-overload]
            bytes_out=int(data.get("bytes_out", 0)),  # type: ignore[call-overload]
        )


# (listener id, instance id or LISTENER_TOTAL) -> figures
Reading = dict[tuple[str, str], Figures]


def parse_lb_metrics(text: str) -> Reading:
    """A reading from lb-runtime's /metrics text (``berth_lb_*`` families); listener totals included."""
    reading: Reading = {}
    cumulative: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def entry(listener: str, instance: str) -> Figures:
        return reading.setdefault((listener, instance), Figures())

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            listener = labels.get("listener")
            if not listener:
                continue
            instance = labels.get("instance", LISTENER_TOTAL)
            value = sample.value
            if sample.name == "berth_lb_requests_total":
                figures = entry(listener, instance)
                figures.requests += int(value)
                status_class = labels.get("status_class", "")
                if status_class == "error":
                    figures.errors_connect += int(value)
                elif status_class == "4xx":
                    figures.responses_4xx += int(value)
                elif status_class == "5xx":
                    figures.responses_5xx += int(value)
            elif sample.name == "berth_lb_request_duration_seconds_bucket":
                bound = math.inf if labels["le"] in ("+Inf", "inf") else float(labels["le"])
                cumulative.setdefault((listener, instance), []).append((bound, value))
                entry(listener, instance)
            elif sample.name == "berth_lb_request_duration_seconds_sum":
                entry(listener, instance).latency_sum += value
            elif sample.name == "berth_lb_active_connections":
                entry(listener, LISTENER_TOTAL).open_connections = int(value)
            elif sample.name == "berth_lb_received_bytes_total":
                entry(listener, LISTENER_TOTAL).bytes_in = int(value)
            elif sample.name == "berth_lb_sent_bytes_total":
                entry(listener, LISTENER_TOTAL).bytes_out = int(value)
            elif sample.name == "berth_lb_upstream_sent_bytes_total":
                entry(listener, instance).bytes_in = int(value)
            elif sample.name == "berth_lb_upstream_received_bytes_total":
                entry(listener, instance).bytes_out = int(value)
    for key, points in cumulative.items():
        reading[key].latency_buckets = rebin(points)
    # A listener's figures are the sum of its instances' (connections and bytes are the listener's own).
    for (listener, instance), figures in list(reading.items()):
        if instance == LISTENER_TOTAL:
            continue
        total = entry(listener, LISTENER_TOTAL)
        total.requests += figures.requests
        total.errors_connect += figures.errors_connect
        total.responses_4xx += figures.responses_4xx
        total.responses_5xx += figures.responses_5xx
        total.latency_sum += figures.latency_sum
        total.latency_buckets = [a + b for a, b in zip(total.latency_buckets, figures.latency_buckets, strict=True)]
    return reading


def rebin(points: Iterable[tuple[float, float]]) -> list[int]:
    """Per-bucket counts on ``LATENCY_BOUNDS`` from cumulative (le, count) points."""
    ordered = sorted(points)
    counts: list[int] = []
    previous = 0
    for bound in (*LATENCY_BOUNDS, math.inf):
        at = 0.0
        for le, count in ordered:
            if le <= bound:
                at = count
        counts.append(max(0, int(at) - previous))
        previous = max(previous, int(at))
    return counts


def delta(current: Figures, previous: Figures | None) -> Figures:
    """What happened between two readings of one counter set; a reset (restart) counts from zero."""
    if previous is None or current.requests < previous.requests or current.latency_sum < previous.latency_sum:
        base = Figures()
    else:
        base = previous
    buckets = [c - p for c, p in zip(current.latency_buckets, base.latency_buckets, strict=True)]
    if any(count < 0 for count in buckets):
        buckets = list(current.latency_buckets)
    return Figures(
        requests=max(0, current.requests - base.requests),
        errors_connect=max(0, current.errors_connect - base.errors_connect),
        responses_4xx=max(0, current.responses_4xx - base.responses_4xx),
        responses_5xx=max(0, current.responses_5xx - base.responses_5xx),
        latency_buckets=buckets,
        latency_sum=max(0.0, current.latency_sum - base.latency_sum),
        open_connections=current.open_connections,
        bytes_in=_growth(current.bytes_in, base.bytes_in),
        bytes_out=_growth(current.bytes_out, base.bytes_out),
    )


def fold_routes(changes: Reading) -> Reading:
    """Deltas by reported id, summed by the listener that owns each id (a host route's traffic is its
    listener's); open connections, each id's own gauge at the same moment, add up too."""
    folded: Reading = {}
    for (reported_id, instance), change in changes.items():
        key = (owning_listener(reported_id), instance)
        seen = folded.get(key)
        folded[key] = change if seen is None else add_figures(seen, change)
    return folded


def add_figures(a: Figures, b: Figures) -> Figures:
    """Two sets of per-interval figures summed."""
    return Figures(
        requests=a.requests + b.requests,
        errors_connect=a.errors_connect + b.errors_connect,
        responses_4xx=a.responses_4xx + b.responses_4xx,
        responses_5xx=a.responses_5xx + b.responses_5xx,
        latency_buckets=add_buckets(a.latency_buckets, b.latency_buckets),
        latency_sum=a.latency_sum + b.latency_sum,
        open_connections=a.open_connections + b.open_connections,
        bytes_in=a.bytes_in + b.bytes_in,
        bytes_out=a.bytes_out + b.bytes_out,
    )


def _growth(current: int, previous: int) -> int:
    """A cumulative counter's growth; below its previous value it was reset, and the new value is the growth."""
    return current if current < previous else current - previous


def quantile_ms(buckets: list[int], q: float) -> float | None:
    """The ``q`` quantile (0-1) in milliseconds from per-bucket counts, interpolated within its bucket as
    Prometheus' histogram_quantile does; None without samples."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for index, count in enumerate(buckets):
        upper = LATENCY_BOUNDS[index] if index < len(LATENCY_BOUNDS) else math.inf
        if count and seen + count >= rank:
            if math.isinf(upper):
                return round(lower * 1000, 3)  # above the last bound: the best we can say is the bound
            return round((lower + (upper - lower) * (rank - seen) / count) * 1000, 3)
        seen += count
        lower = upper
    return round(lower * 1000, 3)


def add_buckets(a: list[int], b: list[int]) -> list[int]:
    """Element-wise sum of two bucket lists."""
    return [x + y for x, y in zip(a, b, strict=True)]
