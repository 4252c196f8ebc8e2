"""Retention of request trails (shared.request_trail): every ``PRUNE_INTERVAL_SECONDS`` any worker deletes the
lines older than ``request_trail_retention_hours`` (several workers doing it at once delete nothing twice)."""

from __future__ import annotations

from shared.errors import DependencyError
from shared.request_trail import RequestTrailStore
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings

PRUNE_INTERVAL_SECONDS = 60.0


def request_trail_retention_task(store: RequestTrailStore, settings: WorkerSettings) -> PeriodicTask:
    """Delete request trail lines older than the retention window, once a minute."""

    async def prune() -> None:
        await store.prune(settings.request_trail_retention_hours)

    return PeriodicTask("request trail retention", PRUNE_INTERVAL_SECONDS, prune, retry_on=(DependencyError,))
