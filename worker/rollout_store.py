"""The SQL behind the rollout driver (worker/rollouts.py): services, their releases and their replicas."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import errors
from psycopg.types.json import Jsonb

from shared.db import Database

_REPLICA_COLUMNS = (
    "c.id, c.name, c.release_number, c.status, c.desired_state, c.reason, c.host_id, c.region, "
    "EXTRACT(EPOCH FROM now() - c.created_at)::float8 AS age_seconds, "
    # How long it has been running (passing its checks): since its last recorded change, which for a running
    # container is the change to running (the event trigger records every status and reason change).
    "CASE WHEN c.status = 'running' THEN EXTRACT(EPOCH FROM now() - "
    "(SELECT max(e.ts) FROM container_events e WHERE e.container_id = c.id))::float8 END AS healthy_seconds"
)


class RolloutStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def service_ids(self) -> list[str]:
        return [str(row["id"]) for row in await self._db.fetch_all("SELECT id FROM services ORDER BY id")]

    @asynccontextmanager
    async def claimed(self, service_id: str) -> AsyncIterator[bool]:
        """Hold the service's rollout lock (a transaction-level advisory lock) for the block; False when another
        process holds it. A process that dies loses its connection, and with it the lock."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(hashtextextended('berth.rollout:' || %s, 0)) AS claimed",
                (service_id,),
            )
            row = await cursor.fetchone()
            yield bool(row and row["claimed"])

    async def service(self, service_id: str) -> dict[str, Any] | None:
        """The service with its target release (the one its ``release_number`` names)."""
        return await self._db.fetch_one(
            "SELECT s.id, s.owner_id, s.name, s.replicas, s.update_policy, s.release_number, "
            "r.image_id, r.config, r.secret_env, r.secret_env_names, r.status AS release_status, r.replaces "
            "FROM services s JOIN service_releases r ON r.service_id = s.id AND r.number = s.release_number "
            "WHERE s.id = %s",
            (service_id,),
        )

    async def replicas(self, service_id: str) -> list[dict[str, Any]]:
        """Every replica not yet deleted, leaving ones (desired deleted) included, oldest first."""
        return await self._db.fetch_all(
            f"SELECT {_REPLICA_COLUMNS} FROM containers c WHERE c.service_id = %s AND c.status <> 'deleted' "
            "ORDER BY c.created_at, c.id",
            (service_id,),
        )

    async def image_ready(self, image_id: str) -> bool:
        row = await self._db.fetch_one("SELECT status FROM images WHERE id = %s", (image_id,))
        return row is not None and row["status"] == "ready"

    async def start_release(self, service_id: str, number: int) -> None:
        await self._db.execute(
            "UPDATE service_releases SET status = 'rolling', started_at = now() "
            "WHERE service_id = %s AND number = %s AND status = 'pending'",
            (service_id, number),
        )

    async def finish_release(self, service_id: str, number: int, status: str, reason: str | None) -> bool:
        """Record a rolling (or pending) release's outcome; a healthy one supersedes the one healthy before."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE service_releases SET status = %s, reason = coalesce(%s, reason), finished_at = now() "
                "WHERE service_id = %s AND number = %s AND status IN ('pending', 'rolling') RETURNING id",
                (status, reason, service_id, number),
            )
            if await cursor.fetchone() is None:
                return False
            if status == "healthy":
                await conn.execute(
                    "UPDATE service_releases SET status = 'superseded' "
                    "WHERE service_id = %s AND number <> %s AND status = 'healthy'",
                    (service_id, number),
                )
            return True

    async def revert(self, service_id: str, failed: int, to: int, reason: str) -> bool:
        """Roll a failing release back: it reads rolled_back, and the service converges on ``to`` again."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE service_releases SET status = 'rolled_back', reason = %s, finished_at = now() "
                "WHERE service_id = %s AND number = %s AND status IN ('pending', 'rolling') RETURNING id",
                (reason, service_id, failed),
            )
            if await cursor.fetchone() is None:
                return False
            await conn.execute(
                "UPDATE services SET release_number = %s, updated_at = now() WHERE id = %s AND release_number = %s",
                (to, service_id, failed),
            )
            return True

    async def insert_replica(
        self,
        container_id: uuid.UUID,
        service: dict[str, Any],
        name: str,
        host_id: str,
        ports: list[dict[str, Any]],
        region: str | None = None,
    ) -> dict[str, Any] | None:
        """Write a pending replica of the service's target release (pinned to ``region`` when one is given);
        None when the name is taken or the service is gone."""
        config = service["config"]
        async with self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM containers WHERE owner_id = %s AND name = %s AND status = 'deleted'",
                (service["owner_id"], name),
            )
            try:
                cursor = await conn.execute(
                    "INSERT INTO containers (id, owner_id, image_id, name, service, command, env, secret_env, "
                    "secret_env_names, ports, cpu, memory_mb, restart_policy, health_check, host_id, service_id, "
                    "release_number, region) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING id, host_id",
                    (
                        container_id,
                        service["owner_id"],
                        service["image_id"],
                        name,
                        service["name"],
                        Jsonb(config["command"]) if config["command"] is not None else None,
                        Jsonb(config["env"]),
                        service["secret_env"],
                        list(service["secret_env_names"] or []),
                        Jsonb(ports),
                        config["cpu"],
                        config["memory_mb"],
                        config["restart_policy"],
                        Jsonb(config["health_check"]) if config["health_check"] is not None else None,
                        host_id,
                        service["id"],
                        service["release_number"],
                        region,
                    ),
                )
            except (errors.UniqueViolation, errors.ForeignKeyViolation):
                return None  # the name is taken, or the service was deleted meanwhile
            return await cursor.fetchone()

    async def remove_replica(self, container_id: str) -> dict[str, Any] | None:
        """Ask for the replica's removal (its host drains it first); its host, or None when already asked."""
        return await self._db.fetch_one(
            "UPDATE containers SET desired_state = 'deleted', reason = NULL, updated_at = now() "
            "WHERE id = %s AND desired_state <> 'deleted' RETURNING id, host_id",
            (container_id,),
        )
