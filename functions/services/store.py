"""The services function's data access. Every query is scoped to the owner: other tenants' rows don't exist.

Changes that move a service to another release lock its row (``FOR UPDATE``), so two deploys (or a deploy
and a rollback) cannot both see no rollout in progress.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from shared.db import Database

_SERVICE = "s.id, s.owner_id, s.name, s.replicas, s.update_policy, s.release_number, s.created_at, s.updated_at"
_RELEASE = (
    "r.id, r.number, r.image_id, r.config, r.secret_env, r.secret_env_names, r.config_digest, r.status, r.reason, "
    "r.replaces, r.created_by, r.created_at, r.finished_at"
)
# A service with its current release's configuration and status, and its replicas counted by release and by
# the region of their host.
_SERVICE_VIEW = (
    f"SELECT {_SERVICE}, r.image_id, r.config, r.secret_env_names, r.status AS release_status, "
    "coalesce((SELECT jsonb_agg(jsonb_build_object('release', c.release, 'running', c.running, 'total', c.total) "
    "ORDER BY c.release DESC) FROM (SELECT release_number AS release, count(*) FILTER (WHERE status = 'running') "
    "AS running, count(*) AS total FROM containers WHERE service_id = s.id AND desired_state <> 'deleted' "
    "AND status <> 'deleted' GROUP BY release_number) c), '[]'::jsonb) AS by_release, "
    "coalesce((SELECT jsonb_agg(jsonb_build_object('region', g.region, 'running', g.running, 'total', g.total) "
    "ORDER BY g.region NULLS LAST) FROM (SELECT h.region, count(*) FILTER (WHERE c.status = 'running') AS running, "
    "count(*) AS total FROM containers c LEFT JOIN hosts h ON h.id = c.host_id WHERE c.service_id = s.id "
    "AND c.desired_state <> 'deleted' AND c.status <> 'deleted' GROUP BY h.region) g), '[]'::jsonb) AS by_region "
    "FROM services s JOIN service_releases r ON r.service_id = s.id AND r.number = s.release_number"
)


class ServiceStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def image(self, owner_id: str, image_id: str) -> dict[str, Any] | None:
        """The owner's image (id, name, tag, status), or None."""
        return await self._db.fetch_one(
            "SELECT id, name, tag, status FROM images WHERE id = %s AND owner_id = %s", (image_id, owner_id)
        )

    async def known_regions(self) -> set[str]:
        """The regions of every registered host (whatever its state)."""
        rows = await self._db.fetch_all("SELECT DISTINCT region FROM hosts")
        return {row["region"] for row in rows}

    async def create(
        self, owner_id: str, name: str, replicas: int, update_policy: dict[str, Any], release: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The service and its release 1 (pending); None when the owner has a service of that name."""
        async with self._db.transaction() as conn:
            try:
                cursor = await conn.execute(
                    "INSERT INTO services (owner_id, name, replicas, update_policy) VALUES (%s, %s, %s, %s) "
                    "RETURNING id",
                    (owner_id, name, replicas, Jsonb(update_policy)),
                )
            except errors.UniqueViolation:
                return None
            created = await cursor.fetchone()
            assert created is not None
            await _insert_release(conn, str(created["id"]), 1, None, owner_id, release)
        return await self.get(owner_id, name)

    async def get(self, owner_id: str, name: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(f"{_SERVICE_VIEW} WHERE s.owner_id = %s AND s.name = %s", (owner_id, name))

    async def page(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the (created_at, id) of the previous page's last service."""
        if after is None:
            return await self._db.fetch_all(
                f"{_SERVICE_VIEW} WHERE s.owner_id = %s ORDER BY s.created_at DESC, s.id DESC LIMIT %s",
                (owner_id, limit),
            )
        return await self._db.fetch_all(
            f"{_SERVICE_VIEW} WHERE s.owner_id = %s AND (s.created_at, s.id) < (%s, %s) "
            "ORDER BY s.created_at DESC, s.id DESC LIMIT %s",
            (owner_id, *after, limit),
        )

    async def update(self, service_id: str, replicas: int | None, update_policy: dict[str, Any] | None) -> None:
        await self._db.execute(
            "UPDATE services SET replicas = coalesce(%s, replicas), update_policy = coalesce(%s, update_policy), "
            "updated_at = now() WHERE id = %s",
            (replicas, Jsonb(update_policy) if update_policy is not None else None, service_id),
        )

    async def releases(self, service_id: str, limit: int, before: int | None) -> list[dict[str, Any]]:
        """The service's releases, newest first; ``before`` is the previous page's last release number."""
        return await self._db.fetch_all(
            f"SELECT {_RELEASE} FROM service_releases r WHERE r.service_id = %s AND r.number < %s "
            "ORDER BY r.number DESC LIMIT %s",
            (service_id, before if before is not None else 2**31 - 1, limit),
        )

    @asynccontextmanager
    async def locked(self, owner_id: str, name: str) -> AsyncIterator[ServiceChange | None]:
        """The service locked against other changes until the block ends (committed then); None without it."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                f"SELECT {_SERVICE} FROM services s WHERE s.owner_id = %s AND s.name = %s FOR UPDATE", (owner_id, name)
            )
            row = await cursor.fetchone()
            yield None if row is None else ServiceChange(conn, row)


class ServiceChange:
    """A service row locked in an open transaction, and the changes made under that lock."""

    def __init__(self, conn: psycopg.AsyncConnection[DictRow], service: dict[str, Any]) -> None:
        self._conn = conn
        self.service = service

    @property
    def service_id(self) -> str:
        return str(self.service["id"])

    async def release(self, number: int) -> dict[str, Any] | None:
        cursor = await self._conn.execute(
            f"SELECT {_RELEASE} FROM service_releases r WHERE r.service_id = %s AND r.number = %s",
            (self.service_id, number),
        )
        return await cursor.fetchone()

    async def last_healthy_release(self, other_than: int) -> dict[str, Any] | None:
        """The newest release that became healthy (healthy, or superseded since), other than ``other_than``."""
        cursor = await self._conn.execute(
            f"SELECT {_RELEASE} FROM service_releases r WHERE r.service_id = %s AND r.number <> %s "
            "AND r.status IN ('healthy', 'superseded') ORDER BY r.number DESC LIMIT 1",
            (self.service_id, other_than),
        )
        return await cursor.fetchone()

    async def finish_release(self, number: int, status: str, reason: str) -> None:
        await self._conn.execute(
            "UPDATE service_releases SET status = %s, reason = %s, finished_at = now() "
            "WHERE service_id = %s AND number = %s",
            (status, reason, self.service_id, number),
        )

    async def add_release(self, replaces: int | None, created_by: str, release: dict[str, Any]) -> int:
        """Write the next release (pending) and point the service at it; its number."""
        cursor = await self._conn.execute(
            "SELECT coalesce(max(number), 0) + 1 AS next FROM service_releases WHERE service_id = %s",
            (self.service_id,),
        )
        found = await cursor.fetchone()
        assert found is not None
        number = int(found["next"])
        await _insert_release(self._conn, self.service_id, number, replaces, created_by, release)
        await self._conn.execute(
            "UPDATE services SET release_number = %s, updated_at = now() WHERE id = %s", (number, self.service_id)
        )
        return number

    async def delete(self) -> list[dict[str, Any]]:
        """Delete the service and its listeners, and mark every replica deleted; the replicas (id, host_id)
        whose hosts must converge."""
        cursor = await self._conn.execute(
            "UPDATE containers SET desired_state = 'deleted', reason = NULL, updated_at = now() "
            "WHERE service_id = %s AND status <> 'deleted' RETURNING id, host_id",
            (self.service_id,),
        )
        replicas = await cursor.fetchall()
        await self._conn.execute(
            "DELETE FROM listeners WHERE owner_id = %s AND service = %s",
            (self.service["owner_id"], self.service["name"]),
        )
        await self._conn.execute("DELETE FROM services WHERE id = %s", (self.service_id,))
        return replicas


async def _insert_release(
    conn: psycopg.AsyncConnection[DictRow],
    service_id: str,
    number: int,
    replaces: int | None,
    created_by: str,
    release: dict[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO service_releases (service_id, number, image_id, config, secret_env, secret_env_names, "
        "config_digest, reason, replaces, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            service_id,
            number,
            release["image_id"],
            Jsonb(release["config"]),
            release["secret_env"],
            release["secret_env_names"],
            release["config_digest"],
            release.get("reason"),
            replaces,
            created_by,
        ),
    )
