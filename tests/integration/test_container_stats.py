"""Container stats against the real PostgreSQL: the worker's sampler stores one sample per running container
of its host (skipping containers Docker lost, retrying failures next round), prunes old samples, and the
containers function answers latest and history, tenant-scoped."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.containers import service
from functions.containers.store import ContainerStore
from shared.db import Database, get_database
from shared.errors import NotFound
from tests.support.waiting import wait_until_async
from worker.container_runtime import RuntimeFinal, RuntimeRetryable
from worker.periodic import run_periodic
from worker.settings import WorkerSettings
from worker.stats import sample_round, sampler_task
from worker.stats_store import StatsStore

SAMPLE = {
    "cpu_percent": 12.5,
    "memory_bytes": 1000,
    "memory_limit_bytes": 256 * 1024 * 1024,
    "net_rx_bytes": 10,
    "net_tx_bytes": 20,
    "block_read_bytes": 30,
    "block_write_bytes": 40,
}


class FakeRuntime:
    """Only what the sampler uses: stats per Docker id (an exception is raised), and sizes."""

    def __init__(self, stats: dict[str, Any], sizes: dict[str, int]) -> None:
        self.stats = stats
        self.sizes = sizes
        self.calls: list[str] = []

    async def container_stats(self, container_id: str) -> dict[str, float]:
        self.calls.append(container_id)
        found = self.stats[container_id]
        if isinstance(found, Exception):
            raise found
        return dict(found)

    async def container_sizes(self, container_ids: Sequence[str]) -> dict[str, int]:
        # Docker's id filter matches id prefixes and answers full ids.
        return {key: value for key, value in self.sizes.items() if any(key.startswith(i) for i in container_ids)}


@pytest.fixture
async def database() -> Database:
    return get_database(os.environ["BERTH_DATABASE_URL"])


@pytest.fixture
async def world(database: Database) -> AsyncIterator[dict[str, Any]]:
    """A host, two users and an image; removed afterwards (their containers and samples by cascade)."""
    host_id = f"test-host-{secrets.token_hex(6)}"
    users = [str(uuid.uuid4()), str(uuid.uuid4())]
    image_id = str(uuid.uuid4())
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 4, 4096)",
            (host_id,),
        )
        for user_id in users:
            await conn.execute(
                "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')",
                (user_id, f"stats-{user_id}@example.com"),
            )
        await conn.execute(
            "INSERT INTO images (id, owner_id, name, tag, object_key) VALUES (%s, %s, 'web', 'v1', 'k')",
            (image_id, users[0]),
        )
    yield {"host_id": host_id, "users": users, "image_id": image_id}
    async with database.transaction() as conn:
        await conn.execute("DELETE FROM containers WHERE host_id = %s", (host_id,))
        await conn.execute("DELETE FROM users WHERE id = ANY(%s)", (users,))
        await conn.execute("DELETE FROM hosts WHERE id = %s", (host_id,))


async def _container(
    database: Database, world: dict[str, Any], status: str, docker_id: str | None, host_id: str | None = None
) -> str:
    container_id = str(uuid.uuid4())
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO containers (id, owner_id, image_id, name, cpu, memory_mb, host_id, docker_id, status) "
            "VALUES (%s, %s, %s, %s, 0.5, 256, %s, %s, %s)",
            (
                container_id,
                world["users"][0],
                world["image_id"],
                f"c-{secrets.token_hex(4)}",
                host_id or world["host_id"],
                docker_id,
                status,
            ),
        )
    return container_id


def _settings(world: dict[str, Any], **overrides: Any) -> WorkerSettings:
    return WorkerSettings(host_id=world["host_id"], **overrides)


async def _samples(database: Database, container_id: str) -> list[dict[str, Any]]:
    async with database.transaction() as conn:
        cursor = await conn.execute(
            "SELECT * FROM container_stats WHERE container_id = %s ORDER BY ts", (container_id,)
        )
        return await cursor.fetchall()


async def test_a_round_samples_the_hosts_running_containers(database: Database, world: dict[str, Any]) -> None:
    # GIVEN running containers (one Docker lost, one whose stats fail for now), and others not to sample
    sized = await _container(database, world, "running", "d-sized")
    unsized = await _container(database, world, "running", "d-unsized")
    lost = await _container(database, world, "running", "d-lost")
    flaky = await _container(database, world, "running", "d-flaky")
    stopped = await _container(database, world, "stopped", "d-stopped")
    await _container(database, world, "creating", None)
    runtime = FakeRuntime(
        {
            "d-sized": SAMPLE,
            "d-unsized": SAMPLE,
            "d-lost": RuntimeFinal("No such container"),
            "d-flaky": RuntimeRetryable("Docker is busy"),
        },
        {"d-sized-and-more": 4096},
    )

    # WHEN the sampler runs a round
    stored = await sample_round(StatsStore(database), runtime, _settings(world))  # type: ignore[arg-type]

    # THEN each sampled running container got one sample, with fs_bytes where Docker sized it
    assert stored == 2
    assert sorted(runtime.calls) == ["d-flaky", "d-lost", "d-sized", "d-unsized"]
    [sample] = await _samples(database, sized)
    assert sample["fs_bytes"] == 4096
    assert sample["cpu_percent"] == 12.5 and sample["memory_limit_bytes"] == 256 * 1024 * 1024
    assert sample["block_write_bytes"] == 40
    [sample] = await _samples(database, unsized)
    assert sample["fs_bytes"] is None
    assert await _samples(database, lost) == []
    assert await _samples(database, flaky) == []
    assert await _samples(database, stopped) == []

    # AND a later round retries what failed
    runtime.stats["d-flaky"] = SAMPLE
    assert await sample_round(StatsStore(database), runtime, _settings(world)) == 3  # type: ignore[arg-type]
    assert len(await _samples(database, flaky)) == 1


async def test_old_samples_are_pruned_and_samples_go_with_their_container(
    database: Database, world: dict[str, Any]
) -> None:
    container_id = await _container(database, world, "stopped", "d-x")
    now = datetime.now(UTC)
    async with database.transaction() as conn:
        for hours in (0, 2, 30):
            await conn.execute(
                "INSERT INTO container_stats (container_id, ts, cpu_percent, memory_bytes, memory_limit_bytes, "
                "net_rx_bytes, net_tx_bytes, block_read_bytes, block_write_bytes) VALUES (%s, %s, 1, 1, 1, 1, 1, 1, 1)",
                (container_id, now - timedelta(hours=hours)),
            )
    await sample_round(StatsStore(database), FakeRuntime({}, {}), _settings(world))  # type: ignore[arg-type]
    assert len(await _samples(database, container_id)) == 2  # the 30-hour-old one is gone (retention 24 h)

    async with database.transaction() as conn:
        await conn.execute("DELETE FROM containers WHERE id = %s", (container_id,))
    assert await _samples(database, container_id) == []


async def test_the_sampler_keeps_going_and_stops(database: Database, world: dict[str, Any]) -> None:
    import asyncio

    container_id = await _container(database, world, "running", "d-loop")
    stopping = asyncio.Event()
    settings = _settings(world, worker_stats_interval_seconds=0.05)
    task = asyncio.create_task(
        run_periodic(
            sampler_task(StatsStore(database), FakeRuntime({"d-loop": SAMPLE}, {}), settings),  # type: ignore[arg-type]
            stopping,
        )
    )

    async def sampled_twice() -> bool:
        return len(await _samples(database, container_id)) >= 2

    await wait_until_async(sampled_twice, timeout=10, message="the sampler stored fewer than 2 samples")
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert len(await _samples(database, container_id)) >= 2


async def test_the_function_answers_latest_and_history_tenant_scoped(database: Database, world: dict[str, Any]) -> None:
    owner, stranger = world["users"]
    containers = ContainerStore(database)
    container_id = await _container(database, world, "running", "d-f")

    # Before the first sample: no latest, no history
    empty = await service.container_stats(containers, owner, container_id, None, 120)
    assert empty.latest is None and empty.history == []

    start = datetime.now(UTC) - timedelta(minutes=10)
    async with database.transaction() as conn:
        for minute in range(5):
            await conn.execute(
                "INSERT INTO container_stats (container_id, ts, cpu_percent, memory_bytes, memory_limit_bytes, "
                "net_rx_bytes, net_tx_bytes, block_read_bytes, block_write_bytes, fs_bytes) "
                "VALUES (%s, %s, %s, 1, 2, 3, 4, 5, 6, NULL)",
                (container_id, start + timedelta(minutes=minute), float(minute)),
            )

    stats = await service.container_stats(containers, owner, container_id, None, 3)
    assert stats.latest is not None and stats.latest.cpu_percent == 4.0 and stats.latest.fs_bytes is None
    assert [sample.cpu_percent for sample in stats.history] == [2.0, 3.0, 4.0]  # the last 3, oldest first

    since = await service.container_stats(
        containers, owner, container_id, (start + timedelta(seconds=90)).isoformat(), 1000
    )
    assert [sample.cpu_percent for sample in since.history] == [2.0, 3.0, 4.0]
    assert since.latest is not None and since.latest.cpu_percent == 4.0
    later = await service.container_stats(containers, owner, container_id, datetime.now(UTC).isoformat(), 1000)
    assert later.history == [] and later.latest is not None and later.latest.cpu_percent == 4.0

    with pytest.raises(NotFound):
        await service.container_stats(containers, stranger, container_id, None, 120)
    with pytest.raises(NotFound):
        await service.container_stats(containers, owner, "not-a-uuid", None, 120)
