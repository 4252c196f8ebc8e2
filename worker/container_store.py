"""The SQL behind the host worker's container reconciling. Status updates are conditional on the desired
state they were made for, so a worker that converged on an outdated wish cannot overwrite a newer one."""

from __future__ import annotations

from typing import Any

from shared.db import Database


class WorkerContainerStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, container_id: str) -> dict[str, Any] | None:
        """The container with its image's host reference; None when there is no such container."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT c.id, c.owner_id, c.name, c.command, c.env, c.ports, c.cpu, c.memory_mb, c.host_id, "
                "c.docker_id, c.desired_state, c.status, i.reference, i.docker_image_id "
                "FROM containers c JOIN images i ON i.id = c.image_id WHERE c.id = %s",
                (container_id,),
            )
            return await cursor.fetchone()

    async def set_status(self, container_id: str, desired_state: str, status: str, reason: str | None = None) -> bool:
        """Record ``status`` if the tenant still wants ``desired_state``; False when the wish changed."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE containers SET status = %s, reason = %s, updated_at = now() "
                "WHERE id = %s AND desired_state = %s AND status <> 'deleted' RETURNING id",
                (status, reason, container_id, desired_state),
            )
            return await cursor.fetchone() is not None

    async def set_docker_id(self, container_id: str, docker_id: str | None) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE containers SET docker_id = %s, updated_at = now() WHERE id = %s", (docker_id, container_id)
            )

    async def fail(self, container_id: str, reason: str) -> None:
        """A job gave up: the container failed (unless it is already deleted)."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE containers SET status = 'failed', reason = %s, updated_at = now() "
                "WHERE id = %s AND status <> 'deleted'",
                (reason[:1000], container_id),
            )
