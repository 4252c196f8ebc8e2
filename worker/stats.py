"""Container stats sampling: every ``worker_stats_interval_seconds`` the worker reads CPU, memory, network,
block I/O and (when Docker sizes it) filesystem use of its host's running containers, stores one sample each
and drops samples older than ``stats_retention_hours``.

A round samples containers concurrently (bounded by ``STATS_CONCURRENCY``). A container that is gone from
Docker is skipped; any other failure is logged and the next round simply tries again.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any

from shared.container_stats import DOCKER_BYTE_FIELDS, StatField
from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from worker.container_runtime import ContainerRuntime, RuntimeFinal, RuntimeRetryable
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings
from worker.stats_store import StatsStore

logger = get_logger("worker")

STATS_CONCURRENCY = 8

# (container id, when, values by StatField): one row of container_stats.
Sample = tuple[str, datetime, dict[str, Any]]


def _fs_bytes(sizes: dict[str, int], docker_id: str) -> int | None:
    if docker_id in sizes:
        return sizes[docker_id]
    # A recorded short id still names the container Docker lists by its full id.
    return next((size for full_id, size in sizes.items() if full_id.startswith(docker_id)), None)


async def _sample_one(runtime: ContainerRuntime, limit: asyncio.Semaphore, row: dict[str, Any]) -> Sample | None:
    async with limit:
        try:
            raw = await runtime.container_stats(row["docker_id"])
        except RuntimeFinal:
            return None  # gone from Docker (or refused): skipped; reconciling notices a lost container
        except RuntimeRetryable as exc:
            log_event(logger, "container stats failed; will retry", container_id=str(row["id"]), error=str(exc))
            return None
    values: dict[str, Any] = {StatField.CPU_PERCENT: float(raw.get(StatField.CPU_PERCENT, 0.0))}
    for name in DOCKER_BYTE_FIELDS:
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
                values[StatField.FS_BYTES] = _fs_bytes(sizes, docker_ids[container_id])
            inserted = await store.insert(samples)
    await store.prune(settings.stats_retention_hours)
    return inserted


async def sample_before_stop(runtime: ContainerRuntime, container_id: str, docker_id: str) -> Sample | None:
    """One last sample of a running container about to be stopped or removed: metering takes CPU-seconds and
    egress from the counters' growth between samples, so without it the use since the last round (up to
    ``worker_stats_interval_seconds``) would go unbilled. The caller stops the container and stores the sample
    after (``store_final_sample``), with the CPU counter the stop read at the container's end when it could.
    None when Docker gave no reading (best effort: only that remainder is lost)."""
    sample = await _sample_one(runtime, asyncio.Semaphore(1), {"id": container_id, "docker_id": docker_id})
    if sample is not None:
        sample[2][StatField.FS_BYTES] = None
    return sample


async def store_final_sample(store: StatsStore, sample: Sample | None, ended_ns: int | None = None) -> None:
    """Store what ``sample_before_stop`` read, its CPU counter moved on to ``ended_ns`` (the counter at the
    container's end, read by the stop) when given; a failure is logged and only loses that remainder."""
    if sample is None:
        return
    container_id, _, values = sample
    if ended_ns is not None and ended_ns >= int(values.get(StatField.CPU_USAGE_NS) or 0):
        sample = (container_id, datetime.now(UTC), {**values, StatField.CPU_USAGE_NS: ended_ns})
    try:
        await store.insert([sample])
    except DependencyError as exc:
        log_event(logger, "final stats sample not stored", container_id=container_id, error=str(exc))


def sampler_task(store: StatsStore, runtime: ContainerRuntime, settings: WorkerSettings) -> PeriodicTask:
    """Sampling every ``worker_stats_interval_seconds``; failures wait for the next round."""
    return PeriodicTask(
        "stats sampling",
        settings.worker_stats_interval_seconds,
        functools.partial(sample_round, store, runtime, settings),
        retry_on=(DependencyError, RuntimeRetryable, RuntimeFinal),
    )
