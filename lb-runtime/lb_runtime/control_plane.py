"""The production snapshot source: listeners from the control plane's database and each listener's
instances from the service registry (the passing instances of the listener owner's service).

``get`` is called every ``snapshot_poll_seconds`` and is cheap when nothing changed: one query reads a
version (the registry's change index, and the count and newest change of the listeners), and only a new
version builds a full snapshot. With Consul as the registry the index comes from a non-blocking
``watch`` of the namespace (Consul's X-Consul-Index). A listener weight of 0 keeps an instance out.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from shared.db import get_database
from shared.registry import Namespace, ServiceRegistry
from shared.registry.postgres import PostgresRegistry


class ControlPlaneSource:
    def __init__(self, database_url: str, registry: ServiceRegistry) -> None:
        self._database_url = database_url
        self._registry = registry
        self._version: tuple[Any, ...] | None = None

    async def _current_version(self) -> tuple[Any, ...]:
        database = get_database(self._database_url, 2)
        async with database.transaction() as conn:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM listeners) AS listeners, "
                "(SELECT max(updated_at) FROM listeners) AS changed, "
                "(SELECT value FROM registry_counter) AS registry_index"
            )
            row = await cursor.fetchone()
        assert row is not None
        if isinstance(self._registry, PostgresRegistry):
            return (row["listeners"], row["changed"], row["registry_index"])
        watched = await self._registry.watch(Namespace.CLIENT_CONTAINERS, index=0, wait_seconds=0)
        return (row["listeners"], row["changed"], watched.index)

    async def _listeners(self) -> list[dict[str, Any]]:
        database = get_database(self._database_url, 2)
        async with database.transaction() as conn:
            cursor = await conn.execute(
                "SELECT id, owner_id, service, port, protocol, algorithm, weights, health_check "
                "FROM listeners ORDER BY port"
            )
            return await cursor.fetchall()

    async def get(self) -> dict[str, Any] | None:
        version = await self._current_version()
        if version == self._version:
            return None
        listeners = []
        for row in await self._listeners():
            weights: dict[str, int] = row["weights"] or {}
            found = await self._registry.instances(
                Namespace.CLIENT_CONTAINERS, row["service"], UUID(str(row["owner_id"])), passing_only=True
            )
            instances = [
                {
                    "id": instance.id,
                    "address": instance.address,
                    "port": instance.port,
                    "weight": weights.get(instance.id, 1),
                }
                for instance in found
                if weights.get(instance.id, 1) > 0
            ]
            check = row["health_check"]
            listeners.append(
                {
                    "id": str(row["id"]),
                    "port": row["port"],
                    "protocol": row["protocol"],
                    "algorithm": row["algorithm"],
                    "health_check": (
                        {
                            key: check[key]
                            for key in (
                                "type",
                                "path",
                                "interval_seconds",
                                "timeout_seconds",
                                "healthy_threshold",
                                "unhealthy_threshold",
                            )
                            if key in check
                        }
                        if check
                        else None
                    ),
                    "instances": instances,
                }
            )
        # The version is taken before reading: a change while building shows up as a new version next call.
        self._version = version
        return {"listeners": listeners}
