"""Container stats sampling: every ``worker_stats_interval_seconds`` the worker reads CPU, memory, network,
block I/O and (when Docker sizes it) filesystem use of its host's running containers, stores one sample each
and drops samples older than ``stats_retention_hours``.

A round samples containers concurrently (bounded by ``STATS_CONCURRENCY``). A container that is gone from
Docker is skipped; any other failure is logged and the next round simply tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from worker.container_runtime import ContainerRuntime, RuntimeFinal, RuntimeRetryable
from worker.settings import WorkerSettings
from worker.stats_store import StatsStore

logger = get_logger("worker")

STATS_CONCURRENCY = 8
INT_FIELDS = (
    "memory_bytes",
    "memory_limit_bytes",
    "net_rx_bytes",
    "net_tx_bytes",
    "block_read_bytes",
    "block_write_bytes",
)


def _fs_bytes(sizes: dict[str, int], docker_id: str) -> int | None:
    if docker_id in sizes:
        return sizes[docker_id]
    # A recorded short id still names the container Docker lists by its full id.
    return next((size for full_id, size in sizes.items() if full_id.startswith(docker_id)), None)


async def _sample_one(
    runtime: ContainerRuntime, limit: asyncio.Semaphore, row: dict[str, Any]
) -> tuple[str, datetime, dict[str, Any]] | None:
    async with limit:
        try:
            raw = await runtime.container_stats(row["docker_id"])
        except RuntimeFinal:
            return None  # gone from Docker (or refused): skipped; reconciling notices a lost container
        except RuntimeRetryable as exc:
            log_event(logger, "container stats failed; will retry", container_id=str(row["id"]), error=str(exc))
            return None
    values: dict[str, Any] = {"cpu_percent": float(raw.get("cpu_percent", 0.0))}
    for name in INT_FIELDS:
        values[name] = int(raw.get(name, 0))
    return str(row["id"]), datetime.now(UTC), values


async def sample_round(store: StatsStore, runtime: ContainerRuntime, settings: WorkerSettings) -> int:
    """Sample this host's running containers once and prune old samples; returns how many were stored."""
    rows = await store.running_on_host(settings.host_id)
    inserted = 0
    if rows:
        limit = asyncio.Semaphore(STATS_CONCURRENCY)
        samples = [
            sample
            for sample in await asyncio.gather(*(_sample_one(runtime, limit, row) for row in rows))
            if sample is not None
        ]
        if samples:
            try:
                sizes = await runtime.container_sizes([row["docker_id"] for row in rows])
            except (RuntimeFinal, RuntimeRetryable) as exc:
                log_event(logger, "container sizes unavailable", error=str(exc))
                sizes = {}
            docker_ids = {str(row["id"]): row["docker_id"] for row in rows}
            for container_id, _ts, values in samples:
                values["fs_bytes"] = _fs_bytes(sizes, docker_ids[container_id])
            inserted = await store.insert(samples)
    await store.prune(settings.stats_retention_hours)
    return inserted


async def run_sampler(
    store: StatsStore, runtime: ContainerRuntime, settings: WorkerSettings, stopping: asyncio.Event
) -> None:
    """Sample every ``worker_stats_interval_seconds`` until ``stopping`` is set; failures wait for the next
    round."""
    while not stopping.is_set():
        try:
            await sample_round(store, runtime, settings)
        except (DependencyError, RuntimeRetryable, RuntimeFinal) as exc:
            log_event(logger, "stats sampling failed; will retry", error=str(exc))
        except Exception:
            logger.exception("stats sampling crashed; will retry")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), settings.worker_stats_interval_seconds)
