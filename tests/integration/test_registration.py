"""The host worker's registry sync against the real PostgreSQL registry: running containers with a published
port are passing instances of their service, unhealthy ones critical, everything else leaves the registry;
a stop takes the container out before it happens."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from shared.db import Database, get_database
from shared.registry import HealthStatus, Namespace
from shared.registry.postgres import PostgresRegistry
from worker.registration import RegistrationStore, RegistrySync, instance_of
from worker.settings import WorkerSettings


@pytest.fixture
async def world(test_database: str) -> AsyncIterator[dict[str, Any]]:
    database = get_database(test_database)
    host_id = f"reg-{secrets.token_hex(4)}"
    owner = uuid.uuid4()
    image = uuid.uuid4()
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 2, 2048)",
            (host_id,),
        )
        await conn.execute(
            "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')", (owner, f"reg-{owner}@example.com")
        )
        await conn.execute(
            "INSERT INTO images (id, owner_id, name, tag, object_key, status) "
            "VALUES (%s, %s, 'web', '1', 'k', 'ready')",
            (image, owner),
        )
    settings = WorkerSettings(host_id=host_id, worker_registry_interval_seconds=0.2)
    registry = PostgresRegistry(test_database)
    yield {
        "database": database,
        "host_id": host_id,
        "owner": owner,
        "image": image,
        "settings": settings,
        "registry": registry,
        "sync": RegistrySync(registry, RegistrationStore(database), settings),
    }
    # The host is live (a fresh heartbeat) but has no queue: left behind, it would take placements of the
    # run's other tests.
    async with database.transaction() as conn:
        await conn.execute("DELETE FROM containers WHERE host_id = %s", (host_id,))
        await conn.execute("DELETE FROM hosts WHERE id = %s", (host_id,))
        await conn.execute("DELETE FROM users WHERE id = %s", (owner,))


async def _container(world: dict[str, Any], status: str, service: str = "web", port: int | None = 30500) -> str:
    database: Database = world["database"]
    ports = [{"container_port": 8080, "protocol": "tcp", "host_ip": "127.0.0.1", "host_port": port}] if port else []
    async with database.transaction() as conn:
        cursor = await conn.execute(
            "INSERT INTO containers (owner_id, image_id, name, service, cpu, memory_mb, host_id, status, ports) "
            "VALUES (%s, %s, %s, %s, 0.5, 64, %s, %s, %s) RETURNING id",
            (
                world["owner"],
                world["image"],
                f"c-{secrets.token_hex(4)}",
                service,
                world["host_id"],
                status,
                Jsonb(ports),
            ),
        )
        row = await cursor.fetchone()
    assert row is not None
    return str(row["id"])


async def _set_status(world: dict[str, Any], container_id: str, status: str, reason: str | None = None) -> None:
    async with world["database"].transaction() as conn:
        await conn.execute(
            "UPDATE containers SET status = %s, reason = %s WHERE id = %s", (status, reason, container_id)
        )


async def _instances(world: dict[str, Any], service: str = "web") -> dict[str, tuple[int, str]]:
    registry: PostgresRegistry = world["registry"]
    found = await registry.instances(Namespace.CLIENT_CONTAINERS, service, world["owner"])
    return {instance.id: (instance.port, instance.status.value) for instance in found}


async def test_running_containers_are_passing_instances_and_others_are_absent(world: dict[str, Any]) -> None:
    running = await _container(world, "running", port=30501)
    await _container(world, "stopped", port=30502)
    await _container(world, "starting", port=30503)
    await _container(world, "running", port=None)  # nothing published: nothing to route to

    counts = await world["sync"].sync_round()

    assert counts["registered"] == 1
    assert await _instances(world) == {running: (30501, "passing")}


async def test_health_and_stops_follow_the_record(world: dict[str, Any]) -> None:
    sync: RegistrySync = world["sync"]
    container = await _container(world, "running", port=30510)
    await sync.sync_round()

    await _set_status(world, container, "unhealthy", "health check failed: HTTP 500")
    await sync.sync_round()
    assert await _instances(world) == {container: (30510, "critical")}

    await _set_status(world, container, "running")
    await sync.sync_round()
    assert await _instances(world) == {container: (30510, "passing")}

    await _set_status(world, container, "stopped")
    counts = await sync.sync_round()
    assert counts["deregistered"] == 1
    assert await _instances(world) == {}


async def test_deregister_takes_a_container_out_at_once(world: dict[str, Any]) -> None:
    sync: RegistrySync = world["sync"]
    container = await _container(world, "running", port=30520)
    await sync.sync_round()
    await sync.deregister(container)
    assert await _instances(world) == {}


async def test_a_restarted_worker_removes_what_its_predecessor_left(world: dict[str, Any]) -> None:
    container = await _container(world, "running", port=30530)
    await world["sync"].sync_round()
    # The worker died after the container stopped but before it deregistered it.
    await _set_status(world, container, "stopped")
    fresh = RegistrySync(world["registry"], RegistrationStore(world["database"]), world["settings"])
    counts = await fresh.sync_round()
    assert counts["deregistered"] >= 1
    assert await _instances(world) == {}


async def test_an_expired_instance_is_registered_again(world: dict[str, Any]) -> None:
    sync: RegistrySync = world["sync"]
    container = await _container(world, "running", port=30540)
    await sync.sync_round()
    await world["registry"].deregister(Namespace.CLIENT_CONTAINERS, container)  # as an expiry sweep would
    await _set_status(world, container, "unhealthy", "down")  # a status change makes the next round report
    await sync.sync_round()
    assert await _instances(world) == {container: (30540, "critical")}


def test_instance_of_a_record() -> None:
    settings = WorkerSettings(host_id="h1")
    row = {
        "id": uuid.uuid4(),
        "owner_id": uuid.uuid4(),
        "service": "api",
        "status": "unhealthy",
        "reason": "TCP 8080 refused",
        "ports": [{"container_port": 8080, "protocol": "tcp", "host_ip": "10.0.0.9", "host_port": 31000}],
    }
    instance = instance_of(row, settings)
    assert instance is not None
    assert (instance.address, instance.port, instance.status) == ("10.0.0.9", 31000, HealthStatus.CRITICAL)
    assert instance.output == "TCP 8080 refused" and instance.meta["host_id"] == "h1"
    assert instance_of({**row, "status": "stopped"}, settings) is None
    udp_only = [{"container_port": 53, "protocol": "udp", "host_ip": "10.0.0.9", "host_port": 31001}]
    assert instance_of({**row, "ports": udp_only}, settings) is None
