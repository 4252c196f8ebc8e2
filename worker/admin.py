"""The host worker's admin port: Prometheus metrics (jobs by kind and outcome, jobs running) on
``BERTH_WORKER_ADMIN_ADDRESS:BERTH_WORKER_ADMIN_PORT`` (0 turns it off). It is also the address the worker
registers itself under in the registry's ``internal-services`` namespace."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from shared.observability import get_logger, log_event
from worker.settings import WorkerSettings

logger = get_logger("worker")


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "berth_worker_jobs", "Jobs finished, by kind and outcome", ["kind", "outcome"], registry=self.registry
        )
        self.running = Gauge("berth_worker_jobs_running", "Jobs running now", registry=self.registry)

    def serve(self, settings: WorkerSettings) -> int | None:
        """Start the metrics server in a thread of its own; the port it listens on (None when turned off)."""
        if settings.worker_admin_port == 0:
            return None
        try:
            server, _ = start_http_server(
                settings.worker_admin_port, settings.worker_admin_address, registry=self.registry
            )
        except OSError as exc:
            # Metrics are not worth stopping the worker for: say so and carry on without them.
            log_event(logger, "metrics port unavailable; running without metrics", error=str(exc))
            return None
        return int(server.server_port)
