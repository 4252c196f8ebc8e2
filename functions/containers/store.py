"""The containers function's data access. Every query is scoped to the owner: other tenants' rows don't exist."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import errors
from psycopg.types.json import Jsonb

from shared.container_stats import STAT_FIELDS
from shared.db import Database

_COLUMNS = (
    "id, owner_id, image_id, name, service, command, env, secret_env_names, ports, cpu, memory_mb, restart_policy, "
    "health_check, host_id, docker_id, desired_state, status, reason, restart_count, exit_code, created_at, "
    "updated_at, release_number, region AS requested_region, "
    "(SELECT h.region FROM hosts h WHERE h.id = containers.host_id) AS region"
)


_STATS_COLUMNS = ", ".join((*STAT_FIELDS, "ts"))


class ContainerStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def image(self, owner_id: str, image_id: str) -> dict[str, Any] | None:
        """The owner's image (id, name, tag, status), or None."""
        return await self._db.fetch_one(
            "SELECT id, name, tag, status FROM images WHERE id = %s AND owner_id = %s", (image_id, owner_id)
        )

    async def create(self, container_id: str, owner_id: str, values: dict[str, Any]) -> dict[str, Any] | None:
        """Insert a pending container; None when the owner has a live container of that name.

        A deleted container of the same name is only a tombstone: it makes room for the new one."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM containers WHERE owner_id = %s AND name = %s AND status = 'deleted'",
                (owner_id, values["name"]),
            )
            try:
                cursor = await conn.execute(
                    "INSERT INTO containers (id, owner_id, image_id, name, service, command, env, secret_env, "
                    "secret_env_names, ports, cpu, memory_mb, restart_policy, health_check, host_id, region) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    f"RETURNING {_COLUMNS}",
                    (
                        container_id,
                        owner_id,
                        values["image_id"],
                        values["name"],
                        values["service"],
                        Jsonb(values["command"]) if values["command"] is not None else None,
                        Jsonb(values["env"]),
                        values["secret_env"],
                        values["secret_env_names"],
                        Jsonb(values["ports"]),
                        values["cpu"],
                        values["memory_mb"],
                        values["restart_policy"],
                        Jsonb(values["health_check"]) if values["health_check"] is not None else None,
                        values["host_id"],
                        values.get("region"),
                    ),
                )
            except errors.UniqueViolation:
                return None
            return await cursor.fetchone()

    async def get(self, owner_id: str, container_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM containers WHERE id = %s AND owner_id = %s", (container_id, owner_id)
        )

    async def page(
        self,
        owner_id: str,
        limit: int,
        after: tuple[datetime, str] | None,
        service: str | None,
        state: str | None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the (created_at, id) of the previous page's last row. Deleted containers
        are listed only when asked for (``state=deleted``)."""
        conditions = ["owner_id = %s"]
        params: list[Any] = [owner_id]
        if service is not None:
            conditions.append("service = %s")
            params.append(service)
        if state is not None:
            conditions.append("status = %s")
            params.append(state)
        else:
            conditions.append("status <> 'deleted'")
        if after is not None:
            conditions.append("(created_at, id) < (%s, %s)")
            params.extend(after)
        params.append(limit)
        return await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM containers WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            params,
        )

    async def set_desired(
        self, owner_id: str, container_id: str, desired: str, allowed_from: tuple[str, ...]
    ) -> dict[str, Any] | None:
        """Set the desired state when the current one is one of ``allowed_from``; None otherwise."""
        return await self._db.fetch_one(
            "UPDATE containers SET desired_state = %s, reason = NULL, updated_at = now() "
            "WHERE id = %s AND owner_id = %s AND desired_state = ANY(%s) "
            f"RETURNING {_COLUMNS}",
            (desired, container_id, owner_id, list(allowed_from)),
        )

    async def events(self, container_id: str, limit: int, before_id: int | None) -> list[dict[str, Any]]:
        """The container's status history, newest first; ``before_id`` is the previous page's last event id.
        The caller checked the container is the tenant's."""
        conditions = ["container_id = %s"]
        params: list[Any] = [container_id]
        if before_id is not None:
            conditions.append("id < %s")
            params.append(before_id)
        params.append(limit)
        return await self._db.fetch_all(
            "SELECT id, ts, status, desired_state, reason FROM container_events "
            f"WHERE {' AND '.join(conditions)} ORDER BY id DESC LIMIT %s",
            params,
        )

    async def logs(self, container_id: str, tail: int, since: datetime | None) -> list[dict[str, Any]]:
        """The container's newest ``tail`` shipped log lines (at or after ``since`` when given), oldest first.
        The caller checked the container is the tenant's."""
        return await self._newest(
            "container_logs", "ts, stream, text", "ts DESC, id DESC", container_id, since, ">=", tail
        )

    async def stats(self, container_id: str, since: datetime | None, limit: int) -> list[dict[str, Any]]:
        """The container's newest ``limit`` samples (taken after ``since`` when given), oldest first. The caller
        checked the container is the tenant's."""
        return await self._newest("container_stats", _STATS_COLUMNS, "ts DESC", container_id, since, ">", limit)

    async def _newest(
        self, table: str, columns: str, order: str, container_id: str, since: datetime | None, after: str, limit: int
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` rows of a per-container time series (``ts {after} since``), oldest first."""
        conditions = "container_id = %s" + (f" AND ts {after} %s" if since is not None else "")
        params: list[Any] = [container_id, *([since] if since is not None else []), limit]
        rows = await self._db.fetch_all(
            f"SELECT {columns} FROM {table} WHERE {conditions} ORDER BY {order} LIMIT %s", params
        )
        rows.reverse()
        return rows

    async def latest_stats(self, container_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            f"SELECT {_STATS_COLUMNS} FROM container_stats WHERE container_id = %s ORDER BY ts DESC LIMIT 1",
            (container_id,),
        )
