"""Per-instance runtime state (in flight, health, ejection, idle upstream connections) and the balancers.

State outlives route tables: an instance that stays in the snapshot keeps its counters, health and pool
across swaps; one that leaves is marked removed (drained: no new requests, in-flight ones finish).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lb_runtime.snapshot import Instance
from lb_runtime.stats import LATENCY_BUCKETS, ListenerStats, latency_bucket


class Backend:
    """One instance of one listener, as the proxy sees it."""

    __slots__ = (
        "active",
        "address",
        "bucket_counts",
        "bytes_in",
        "bytes_out",
        "connections_opened",
        "current_weight",
        "ejected_until",
        "failures",
        "health_failures",
        "health_successes",
        "healthy",
        "id",
        "idle",
        "latency_sum",
        "listener_id",
        "port",
        "probed",
        "removed",
        "stats",
        "status_counts",
        "weight",
    )

    def __init__(self, listener_id: str, instance: Instance, *, checked: bool) -> None:
        self.listener_id = listener_id
        self.id = instance.id
        self.address = instance.address
        self.port = instance.port
        self.weight = instance.weight
        self.current_weight = 0
        self.active = 0
        # With an active health check an instance gets traffic only once a check has passed.
        self.healthy = not checked
        self.probed = False
        self.health_successes = 0
        self.health_failures = 0
        self.ejected_until = 0.0
        self.failures = 0
        self.removed = False
        self.idle: list[Any] = []  # idle upstream connections, most recently used last
        self.connections_opened = 0
        # Requests by status class: index 0 is "no answer from upstream" (counted as 5xx by the proxy's answer).
        self.status_counts = [0, 0, 0, 0, 0, 0]
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        # Bytes on the connections to this instance: sent to it (in: requests as forwarded, or a TCP stream's
        # client side) and received from it (out: its answers as it wrote them). The listener's own figures
        # (ListenerStats) count the client side, which differs by the headers the proxy adds and strips.
        self.bytes_in = 0
        self.bytes_out = 0
        self.stats: ListenerStats | None = None  # the listener's, set by the listener that serves this backend

    @property
    def available(self) -> bool:
        """Takes new traffic: healthy, still in the snapshot, not ejected."""
        return self.takes_traffic()

    def takes_traffic(self) -> bool:
        """``available`` as a method (what the balancers call: a plain call in the compiled build)."""
        if not self.healthy or self.removed:
            return False
        return self.ejected_until == 0.0 or self.ejected_until <= time.monotonic()

    def eject(self, seconds: float) -> None:
        """Keep new traffic away for ``seconds`` after a failed connect or request."""
        self.failures += 1
        if seconds > 0:
            self.ejected_until = time.monotonic() + seconds

    def record(self, status: int, seconds: float, now: float | None = None) -> None:
        """Count one finished request (here and in the listener's stats); status 0 is a failed TCP connection."""
        self.status_counts[status // 100 if 100 <= status < 600 else 0] += 1
        self.bucket_counts[latency_bucket(seconds)] += 1
        self.latency_sum += seconds
        if self.stats is not None:
            self.stats.record(seconds, status >= 500 or status < 100, now)

    def close_idle(self) -> None:
        """Close every idle upstream connection (the instance left or the proxy stops)."""
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()

    def __repr__(self) -> str:
        return f"Backend({self.listener_id}/{self.id} {self.address}:{self.port})"


class Balancer:
    """Picks an available backend for each new request or connection, by the listener's algorithm."""

    __slots__ = ("_next", "algorithm", "backends", "pick")

    def __init__(self, algorithm: str, backends: Sequence[Backend]) -> None:
        self.algorithm = algorithm
        self.backends: tuple[Backend, ...] = tuple(backends)
        self._next = 0
        self.pick = {
            "round_robin": self._round_robin,
            "least_connections": self._least_connections,
            "weighted": self._smooth_weighted,
        }[algorithm]

    def _round_robin(self, exclude: Any = ()) -> Backend | None:
        backends = self.backends
        count = len(backends)
        start = self._next
        for offset in range(count):
            backend = backends[(start + offset) % count]
            if backend.takes_traffic() and backend not in exclude:
                self._next = (start + offset + 1) % count
                return backend
        return None

    def _least_connections(self, exclude: Any = ()) -> Backend | None:
        # Ties go round robin, so equal backends share the load instead of the first one taking it all.
        backends = self.backends
        count = len(backends)
        start = self._next
        best: Backend | None = None
        best_index = 0
        for offset in range(count):
            index = (start + offset) % count
            backend = backends[index]
            if backend.takes_traffic() and backend not in exclude and (best is None or backend.active < best.active):
                best, best_index = backend, index
        if best is not None:
            self._next = (best_index + 1) % count
        return best

    def _smooth_weighted(self, exclude: Any = ()) -> Backend | None:
        # nginx's smooth weighted round robin: every candidate gains its weight, the richest is picked and
        # pays the total back; 3:1 gives a a b a, not a a a b.
        total = 0
        best: Backend | None = None
        for backend in self.backends:
            if not backend.takes_traffic() or backend in exclude:
                continue
            backend.current_weight += backend.weight
            total += backend.weight
            if best is None or backend.current_weight > best.current_weight:
                best = backend
        if best is not None:
            best.current_weight -= total
        return best
