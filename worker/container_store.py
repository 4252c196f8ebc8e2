"""The SQL behind the host worker's container reconciling. Status updates are conditional on the desired
state they were made for, so a worker that converged on an outdated wish cannot overwrite a newer one."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from shared.db import Database

# What a job or the reconciler needs of a container; idle_seconds is how long its record has not changed
# (by the database's clock, so workers with skewed clocks agree on what is stuck).
_COLUMNS = (
    "c.id, c.owner_id, c.name, c.service, c.command, c.env, c.secret_env, c.ports, c.cpu, c.memory_mb, c.host_id, "
    "c.docker_id, c.desired_state, c.status, c.reason, c.restart_policy, c.health_check, c.restart_count, "
    "c.last_restart_at, c.exit_code, EXTRACT(EPOCH FROM now() - c.updated_at)::float8 AS idle_seconds, "
    "i.reference, i.docker_image_id, i.object_key"
)


class WorkerContainerStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, container_id: str) -> dict[str, Any] | None:
        """The container with its image's host reference; None when there is no such container."""
        if not _is_uuid(container_id):
            return None
        return await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM containers c JOIN images i ON i.id = c.image_id WHERE c.id = %s",
            (container_id,),
        )

    async def on_host(self, host_id: str) -> list[dict[str, Any]]:
        """Every container placed on ``host_id`` that is not deleted yet, as ``get`` answers it."""
        return await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM containers c JOIN images i ON i.id = c.image_id "
            "WHERE c.host_id = %s AND c.status <> 'deleted' ORDER BY c.id",
            (host_id,),
        )

    async def placements(self, container_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Host, status, desired state and Docker id of each of ``container_ids`` that has a record (ids that
        are no UUID have none)."""
        valid = [value for value in container_ids if _is_uuid(value)]
        if not valid:
            return {}
        rows = await self._db.fetch_all(
            "SELECT id, host_id, status, desired_state, docker_id FROM containers WHERE id = ANY(%s::uuid[])",
            (valid,),
        )
        return {str(row["id"]): row for row in rows}

    async def set_status(self, container_id: str, desired_state: str, status: str, reason: str | None = None) -> bool:
        """Record ``status`` if the tenant still wants ``desired_state``; False when the wish changed."""
        updated = await self._db.fetch_one(
            "UPDATE containers SET status = %s, reason = %s, updated_at = now() "
            "WHERE id = %s AND desired_state = %s AND status <> 'deleted' RETURNING id",
            (status, reason, container_id, desired_state),
        )
        return updated is not None

    async def stamp_stop(self, container_id: str, finished_at: datetime) -> None:
        """Date the container's last event (its ``stopped``) at Docker's own exit time when that is earlier:
        metering bills the running time between events, and the row is written only after Docker's stop
        call returns (its network teardown), a few hundred ms after the process exited."""
        await self._db.execute(
            "WITH recent AS (SELECT id, ts, status, lag(ts) OVER (ORDER BY id) AS before FROM container_events "
            "  WHERE container_id = %(id)s ORDER BY id DESC LIMIT 2) "
            "UPDATE container_events e SET ts = %(at)s FROM recent r "
            "WHERE e.id = r.id AND r.id = (SELECT max(id) FROM recent) AND r.status = 'stopped' "
            "AND r.ts > %(at)s AND r.ts - %(at)s < interval '10 seconds' AND (r.before IS NULL OR r.before < %(at)s)",
            {"id": container_id, "at": finished_at},
        )

    async def record_exit(
        self, container_id: str, desired_state: str, exit_code: int | None, status: str, reason: str
    ) -> bool:
        """The container exited with ``exit_code``: record it with ``status`` and ``reason`` (conditional on
        the desired state, as ``set_status``). Unchanged values are not written again, so the event history
        gets one entry per exit, not one per reconciler round."""
        updated = await self._db.fetch_one(
            "UPDATE containers SET status = %s, reason = %s, exit_code = %s, updated_at = now() "
            "WHERE id = %s AND desired_state = %s AND status <> 'deleted' "
            "AND (status, reason, exit_code) IS DISTINCT FROM (%s, %s, %s) RETURNING id",
            (status, reason, exit_code, container_id, desired_state, status, reason, exit_code),
        )
        return updated is not None

    async def record_restart(self, container_id: str, reason: str) -> int | None:
        """Count one restart by the reconciler (status ``starting``); the new restart count, or None when the
        tenant no longer wants the container running."""
        row = await self._db.fetch_one(
            "UPDATE containers SET status = 'starting', reason = %s, restart_count = restart_count + 1, "
            "last_restart_at = now(), updated_at = now() "
            "WHERE id = %s AND desired_state = 'running' AND status <> 'deleted' RETURNING restart_count",
            (reason, container_id),
        )
        return None if row is None else int(row["restart_count"])

    async def set_ports(self, container_id: str, ports: list[dict[str, Any]]) -> None:
        await self._db.execute(
            "UPDATE containers SET ports = %s, updated_at = now() WHERE id = %s", (Jsonb(ports), container_id)
        )

    async def set_docker_id(self, container_id: str, docker_id: str | None) -> None:
        await self._db.execute(
            "UPDATE containers SET docker_id = %s, updated_at = now() WHERE id = %s", (docker_id, container_id)
        )

    async def set_network_address(self, container_id: str, address: str | None) -> None:
        """Where the running container is reached on its tenant network (the internal DNS answers it)."""
        await self._db.execute(
            "UPDATE containers SET network_address = %s WHERE id = %s AND network_address IS DISTINCT FROM %s",
            (address, container_id, address),
        )

    async def fail(self, container_id: str, reason: str) -> None:
        """A job gave up: the container failed (unless it is already deleted)."""
        if not _is_uuid(container_id):
            return
        await self._db.execute(
            "UPDATE containers SET status = 'failed', reason = %s, updated_at = now() "
            "WHERE id = %s AND status <> 'deleted'",
            (reason[:1000], container_id),
        )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
