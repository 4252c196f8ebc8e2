"""The traffic recorder: every ``worker_traffic_interval_seconds`` it reads lb-runtime's admin /metrics
(``BERTH_LB_ADMIN_URL``) and adds what changed since the last reading to the listeners' history
(worker.traffic_store; the arithmetic in shared.traffic_history), a host route's on the shared ports to the
listener that owns its host name (shared.host_routes). Any number of workers may run it: the
cursor row's lock serialises them, and an interval read twice adds only what changed in between.
An lb-runtime that is down skips the round (no samples: the history shows a gap, not zeros)."""

from __future__ import annotations

import httpx

from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from shared.traffic_history import parse_lb_metrics
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings
from worker.traffic_store import TrafficStore

logger = get_logger("worker")


class LbUnreachable(Exception):
    """lb-runtime's admin port did not answer its figures."""


async def read_lb_metrics(admin_url: str) -> str:
    """lb-runtime's /metrics text."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = await client.get(admin_url.rstrip("/") + "/metrics")
    except httpx.HTTPError as exc:
        raise LbUnreachable(f"lb-runtime at {admin_url} did not answer: {exc}") from exc
    if answer.status_code != 200:
        raise LbUnreachable(f"lb-runtime at {admin_url} answered {answer.status_code}")
    return answer.text


async def record_traffic_round(store: TrafficStore, settings: WorkerSettings) -> int:
    """One reading recorded; how many sample rows it wrote."""
    reading = parse_lb_metrics(await read_lb_metrics(settings.lb_admin_url))
    recorded = await store.record(settings.lb_admin_url, reading, int(settings.worker_traffic_interval_seconds))
    await store.expire()
    if recorded is None:
        log_event(logger, "traffic recorder started from a first reading", listeners=len(reading))
        return 0
    return recorded[1]


def traffic_recorder_task(store: TrafficStore, settings: WorkerSettings) -> PeriodicTask:
    async def run() -> None:
        await record_traffic_round(store, settings)

    return PeriodicTask(
        "traffic recording", settings.worker_traffic_interval_seconds, run, retry_on=(LbUnreachable, DependencyError)
    )
