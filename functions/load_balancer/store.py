"""The load-balancer function's data access. Every query is scoped to the owner; ports are unique across
all owners (the table's UNIQUE constraint is what keeps a port from going out twice)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import errors
from psycopg.types.json import Jsonb

from shared.db import Database

_COLUMNS = "id, owner_id, service, port, protocol, algorithm, weights, health_check, regions, created_at, updated_at"


class PortTaken(Exception):
    """Another listener holds the port."""


class ListenerStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def service_containers(self, owner_id: str, service: str) -> list[str]:
        """The ids of the owner's live containers in ``service`` (a container without a service name is
        the only replica of a service named after it)."""
        rows = await self._db.fetch_all(
            "SELECT id FROM containers WHERE owner_id = %s AND coalesce(service, name) = %s "
            "AND status <> 'deleted' ORDER BY id",
            (owner_id, service),
        )
        return [str(row["id"]) for row in rows]

    async def known_regions(self) -> set[str]:
        """The regions of every registered host (whatever its state)."""
        rows = await self._db.fetch_all("SELECT DISTINCT region FROM hosts")
        return {row["region"] for row in rows}

    async def free_ports(self, first: int, last: int, limit: int) -> list[int]:
        """Up to ``limit`` ports of ``first..last`` no listener holds, in random order."""
        rows = await self._db.fetch_all(
            "SELECT candidate.port FROM generate_series(%s::int, %s::int) AS candidate (port) "
            "WHERE NOT EXISTS (SELECT 1 FROM listeners l WHERE l.port = candidate.port) "
            "ORDER BY random() LIMIT %s",
            (first, last, limit),
        )
        return [row["port"] for row in rows]

    async def create(self, owner_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """Insert the listener; PortTaken when its port is held."""
        try:
            row = await self._db.fetch_one(
                "INSERT INTO listeners (owner_id, service, port, protocol, algorithm, weights, health_check, regions) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (
                    owner_id,
                    values["service"],
                    values["port"],
                    values["protocol"],
                    values["algorithm"],
                    Jsonb(values["weights"]),
                    Jsonb(values["health_check"]) if values["health_check"] is not None else None,
                    Jsonb(values["regions"]) if values.get("regions") is not None else None,
                ),
            )
        except errors.UniqueViolation as exc:
            raise PortTaken from exc
        assert row is not None
        return row

    async def get(self, owner_id: str, listener_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM listeners WHERE id = %s AND owner_id = %s", (listener_id, owner_id)
        )

    async def update(self, owner_id: str, listener_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Apply ``changes`` (column -> value); None when there is no such listener; PortTaken on a held port."""
        assignments = ", ".join(f"{column} = %s" for column in changes)
        values = [
            Jsonb(value) if column in ("weights", "health_check", "regions") and value is not None else value
            for column, value in changes.items()
        ]
        try:
            return await self._db.fetch_one(
                f"UPDATE listeners SET {assignments}, updated_at = now() "
                f"WHERE id = %s AND owner_id = %s RETURNING {_COLUMNS}",
                (*values, listener_id, owner_id),
            )
        except errors.UniqueViolation as exc:
            raise PortTaken from exc

    async def delete(self, owner_id: str, listener_id: str) -> bool:
        deleted = await self._db.fetch_one(
            "DELETE FROM listeners WHERE id = %s AND owner_id = %s RETURNING id", (listener_id, owner_id)
        )
        return deleted is not None

    async def page(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the (created_at, id) of the previous page's last row."""
        conditions = "owner_id = %s"
        params: list[Any] = [owner_id]
        if after is not None:
            conditions += " AND (created_at, id) < (%s, %s)"
            params.extend(after)
        return await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM listeners WHERE {conditions} ORDER BY created_at DESC, id DESC LIMIT %s",
            (*params, limit),
        )


class TrafficHistoryStore:
    """The listeners' recorded traffic (written by the host workers' recorder, worker.traffic_store)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def samples(self, listener_id: str, resolution: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Samples of the listener and its instances at ``resolution`` with start <= ts < end, oldest first."""
        return await self._db.fetch_all(
            "SELECT instance, ts, requests, errors_connect, responses_4xx, responses_5xx, latency_buckets, "
            "open_connections, bytes_in, bytes_out FROM traffic_samples WHERE listener_id = %s AND resolution = %s "
            "AND ts >= %s AND ts < %s ORDER BY ts",
            (listener_id, resolution, start, end),
        )
