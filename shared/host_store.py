"""The SQL behind host registration, heartbeats, placement and host-port allocation.

Every statement is conditional or conflict-tolerant, so several workers (and the control plane) may
run them at once: the primary key of ``port_allocations`` is what keeps a port from going out twice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from shared.db import Database
from shared.errors import NotFound


class HostStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def upsert(
        self, host_id: str, address: str, cpu_capacity: float, memory_capacity_mb: int, region: str = "local"
    ) -> dict[str, Any]:
        """Create the host, or refresh its address, capacity and region; either way it is alive from now on.

        A draining host stays draining: an operator's drain outlives a worker restart."""
        row = await self._db.fetch_one(
            "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb, region, status, heartbeat_at) "
            "VALUES (%s, %s, %s, %s, %s, 'up', now()) "
            "ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, "
            "cpu_capacity = EXCLUDED.cpu_capacity, memory_capacity_mb = EXCLUDED.memory_capacity_mb, "
            "region = EXCLUDED.region, heartbeat_at = now(), "
            "status = CASE WHEN hosts.status = 'draining' THEN 'draining' ELSE 'up' END "
            "RETURNING id, address, cpu_capacity, memory_capacity_mb, status, heartbeat_at, registered_at, "
            "labels, region",
            (host_id, address, Decimal(str(cpu_capacity)), memory_capacity_mb, region),
        )
        assert row is not None  # an upsert always returns its row
        return row

    async def touch(self, host_id: str) -> bool:
        """Record a heartbeat (a host marked down comes back up); False when the host is not registered."""
        touched = await self._db.fetch_one(
            "UPDATE hosts SET heartbeat_at = now(), "
            "status = CASE WHEN status = 'down' THEN 'up' ELSE status END "
            "WHERE id = %s RETURNING id",
            (host_id,),
        )
        return touched is not None

    async def mark_silent_down(self, max_silence_seconds: float) -> list[str]:
        """Hosts not down whose last heartbeat is older than ``max_silence_seconds`` -> down; their ids."""
        rows = await self._db.fetch_all(
            "UPDATE hosts SET status = 'down' "
            "WHERE status <> 'down' AND heartbeat_at < now() - make_interval(secs => %s) "
            "RETURNING id",
            (float(max_silence_seconds),),
        )
        return sorted(row["id"] for row in rows)

    async def get(self, host_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            "SELECT id, address, cpu_capacity, memory_capacity_mb, status, heartbeat_at, registered_at, labels "
            "FROM hosts WHERE id = %s",
            (host_id,),
        )

    async def list_up(self) -> list[dict[str, Any]]:
        """Every host whose status is ``up``, by id."""
        return await self._db.fetch_all(
            "SELECT id, address, cpu_capacity, memory_capacity_mb, status, heartbeat_at, registered_at, labels "
            "FROM hosts WHERE status = 'up' ORDER BY id"
        )

    async def least_busy_host(
        self, max_silence_seconds: float, exclude: Collection[str] = (), region: str | None = None
    ) -> dict[str, Any] | None:
        """The live host (up, heartbeat fresh, not in ``exclude``, in ``region`` when one is named) with the
        fewest containers not deleted; None when none is."""
        return await self._db.fetch_one(
            "SELECT h.id, h.address, h.region, "
            "(SELECT count(*) FROM containers c WHERE c.host_id = h.id AND c.status <> 'deleted') AS load "
            "FROM hosts h WHERE h.status = 'up' AND h.heartbeat_at > now() - make_interval(secs => %s) "
            "AND NOT (h.id = ANY(%s)) AND (%s::text IS NULL OR h.region = %s) "
            "ORDER BY load, h.id LIMIT 1",
            (float(max_silence_seconds), list(exclude), region, region),
        )

    async def regions(self) -> set[str]:
        """The regions of every registered host (whatever its state)."""
        rows = await self._db.fetch_all("SELECT DISTINCT region FROM hosts")
        return {row["region"] for row in rows}

    # ------------------------------------------------------------------ containers of hosts that went down
    # Each statement names the host the container is expected on, so two workers sweeping at once act on
    # a container once: the second finds it moved (or settled) and changes nothing.

    async def containers_on_down_hosts(self) -> list[dict[str, Any]]:
        """Containers not deleted whose host is down (id, host_id, the host's region, desired_state, status),
        oldest change first."""
        return await self._db.fetch_all(
            "SELECT c.id, c.host_id, h.region AS host_region, c.region AS pinned_region, c.desired_state, c.status "
            "FROM containers c "
            "JOIN hosts h ON h.id = c.host_id WHERE h.status = 'down' AND c.status <> 'deleted' "
            "ORDER BY c.updated_at, c.id"
        )

    async def settle_deleted_container(self, container_id: str, host_id: str) -> bool:
        """A container its tenant deleted, on a down host -> deleted; False when it is not (or no longer) so."""
        settled = await self._db.fetch_one(
            "UPDATE containers SET status = 'deleted', docker_id = NULL, updated_at = now() "
            "WHERE id = %s AND host_id = %s AND desired_state = 'deleted' AND status <> 'deleted' RETURNING id",
            (container_id, host_id),
        )
        return settled is not None

    async def mark_container_lost(self, container_id: str, host_id: str, reason: str) -> bool:
        """A container on host ``host_id``, while that host is down -> lost; False when another worker did
        it, the container moved, its tenant deleted it or the host came back."""
        marked = await self._db.fetch_one(
            "UPDATE containers SET status = 'lost', reason = %s, updated_at = now() "
            "WHERE id = %s AND host_id = %s AND status NOT IN ('lost', 'deleted') "
            "AND desired_state <> 'deleted' "
            "AND EXISTS (SELECT 1 FROM hosts h WHERE h.id = %s AND h.status = 'down') RETURNING id",
            (reason[:1000], container_id, host_id, host_id),
        )
        return marked is not None

    async def reclaim_lost_containers(self) -> list[dict[str, Any]]:
        """Lost containers whose host heartbeats again (before they could move) -> pending, or stopped as
        their tenant wants, for that host to converge; their ids and host ids."""
        rows = await self._db.fetch_all(
            "UPDATE containers c SET status = CASE WHEN c.desired_state = 'stopped' THEN 'stopped' "
            "ELSE 'pending' END, reason = 'host ' || h.id || ' is heartbeating again', updated_at = now() "
            "FROM hosts h WHERE h.id = c.host_id AND h.status IN ('up', 'draining') "
            "AND c.status = 'lost' AND c.desired_state <> 'deleted' RETURNING c.id, c.host_id"
        )
        return sorted(rows, key=lambda row: (row["host_id"], str(row["id"])))

    @asynccontextmanager
    async def lock_lost_container(self, container_id: str, host_id: str) -> AsyncIterator[LostContainer | None]:
        """Hold the lost container of down host ``host_id`` for moving until the block ends (its move
        commits then; an error rolls it back); None when it is not there, or another worker holds it."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT id, host_id, desired_state, ports FROM containers "
                "WHERE id = %s AND host_id = %s AND status = 'lost' AND desired_state <> 'deleted' "
                "AND EXISTS (SELECT 1 FROM hosts h WHERE h.id = %s AND h.status = 'down') "
                "FOR UPDATE SKIP LOCKED",
                (container_id, host_id, host_id),
            )
            row = await cursor.fetchone()
            yield None if row is None else LostContainer(conn, row)

    async def free_ports(self, host_id: str, first: int, last: int, step: int, limit: int) -> list[int]:
        """Up to ``limit`` ports of ``first..last`` (every ``step``) not allocated on the host, in random
        order, so concurrent allocators seldom reach for the same one."""
        rows = await self._db.fetch_all(
            "SELECT candidate.port FROM generate_series(%s::int, %s::int, %s::int) AS candidate (port) "
            "WHERE NOT EXISTS (SELECT 1 FROM port_allocations a "
            "WHERE a.host_id = %s AND a.port = candidate.port) "
            "ORDER BY random() LIMIT %s",
            (first, last, step, host_id, limit),
        )
        return [row["port"] for row in rows]

    async def withdraw_placement(self, container_id: uuid.UUID) -> bool:
        """Remove a container record no worker has touched yet (still pending, never created in Docker); False
        when a worker already took it up (it then goes on as placed)."""
        removed = await self._db.execute(
            "DELETE FROM containers WHERE id = %s AND status = 'pending' AND docker_id IS NULL", (container_id,)
        )
        return removed > 0

    async def claim_first_free(
        self, host_id: str, candidates: list[int], owner_kind: str, owner_id: uuid.UUID
    ) -> int | None:
        """Allocate the first of ``candidates`` nobody holds; None when others took every one meanwhile."""
        try:
            async with self._db.transaction() as conn:
                for port in candidates:
                    cursor = await conn.execute(
                        "INSERT INTO port_allocations (host_id, port, owner_kind, owner_id) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (host_id, port) DO NOTHING RETURNING port",
                        (host_id, port, owner_kind, owner_id),
                    )
                    row = await cursor.fetchone()
                    if row is not None:
                        return int(row["port"])
        except psycopg.errors.ForeignKeyViolation as exc:
            raise NotFound(f"Host {host_id!r} is not registered.") from exc
        return None

    async def release(self, owner_kind: str, owner_id: uuid.UUID) -> list[tuple[str, int]]:
        """Free every port the owner holds on any host; the (host, port) pairs freed."""
        rows = await self._db.fetch_all(
            "DELETE FROM port_allocations WHERE owner_kind = %s AND owner_id = %s RETURNING host_id, port",
            (owner_kind, owner_id),
        )
        return sorted((row["host_id"], row["port"]) for row in rows)

    async def release_port(self, host_id: str, port: int, owner_kind: str, owner_id: uuid.UUID) -> bool:
        """Free one port the owner holds on a host; False when the owner does not hold it."""
        released = await self._db.fetch_one(
            "DELETE FROM port_allocations WHERE host_id = %s AND port = %s AND owner_kind = %s AND owner_id = %s "
            "RETURNING port",
            (host_id, port, owner_kind, owner_id),
        )
        return released is not None

    async def ports_of(self, owner_kind: str, owner_id: uuid.UUID) -> list[tuple[str, int]]:
        """The (host, port) pairs the owner holds."""
        rows = await self._db.fetch_all(
            "SELECT host_id, port FROM port_allocations WHERE owner_kind = %s AND owner_id = %s ORDER BY host_id, port",
            (owner_kind, owner_id),
        )
        return [(row["host_id"], row["port"]) for row in rows]


class LostContainer:
    """A lost container held (row-locked) by ``HostStore.lock_lost_container`` while it is moved."""

    def __init__(self, conn: psycopg.AsyncConnection[DictRow], row: dict[str, Any]) -> None:
        self._conn = conn
        self.id = str(row["id"])
        self.host_id: str = row["host_id"]
        self.desired_state: str = row["desired_state"]
        self.ports: list[dict[str, Any]] = list(row["ports"] or [])

    async def move(self, host_id: str, ports: list[dict[str, Any]], status: str, reason: str) -> None:
        """Place it on ``host_id`` with ``ports`` and no Docker container yet; committed when the lock ends."""
        await self._conn.execute(
            "UPDATE containers SET host_id = %s, ports = %s, docker_id = NULL, status = %s, reason = %s, "
            "updated_at = now() WHERE id = %s",
            (host_id, Jsonb(ports), status, reason[:1000], self.id),
        )
