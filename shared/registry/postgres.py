"""The service registry in PostgreSQL (migration 0008.registry): the local stand-in for Consul.

Every change runs in one transaction that first locks the single counter row, so changes are ordered by the
index they take and commit in that order; it then stamps the index on the instance and on its service's index
row and NOTIFYs ``berth_registry`` ("namespace/service"), delivered at commit. A watch LISTENs on a
connection of its own before it reads the index, so a change committed between the two still wakes it, and
it re-reads the index when its time is up rather than trust that every notification arrived.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from uuid import UUID

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from shared.db import Database, get_database
from shared.errors import DependencyError, NotFound
from shared.registry import (
    HealthStatus,
    Instance,
    Namespace,
    ServiceRegistry,
    ServiceSummary,
    WatchResult,
    clip_output,
)

CHANNEL = "berth_registry"

# A check not reported within its report TTL reads as critical ("TTL expired", as Consul says).
_LAPSED = (
    "(r.report_ttl_seconds IS NOT NULL AND r.last_report_at < now() - make_interval(secs => r.report_ttl_seconds))"
)
_STATUS = f"CASE WHEN {_LAPSED} THEN 'critical' ELSE r.status END"
_CRITICAL_SINCE = (
    "CASE WHEN r.status = 'critical' THEN r.status_since"
    " ELSE r.last_report_at + make_interval(secs => r.report_ttl_seconds) END"
)
_COLUMNS = (
    "r.namespace, r.id, r.service, r.owner_id, r.address, r.port, r.tags, r.meta, r.health_check, r.updated_at,"
    f" {_STATUS} AS status,"
    f" CASE WHEN {_LAPSED} THEN 'TTL expired' ELSE r.output END AS output"
)

_UPSERT = f"""
INSERT INTO registry_instances AS r (
    namespace, id, service, owner_id, address, port, status, output, tags, meta, health_check,
    report_ttl_seconds, deregister_after_seconds, modify_index, last_passing_at)
VALUES (%(namespace)s, %(id)s, %(service)s, %(owner_id)s, %(address)s, %(port)s, %(status)s,
    %(output)s, %(tags)s, %(meta)s, %(check)s, %(report_ttl)s, %(deregister_after)s,
    %(index)s, CASE WHEN %(status)s = 'passing' THEN now() END)
ON CONFLICT (namespace, id) DO UPDATE SET
    service = EXCLUDED.service, owner_id = EXCLUDED.owner_id, address = EXCLUDED.address,
    port = EXCLUDED.port, status = EXCLUDED.status, output = EXCLUDED.output,
    tags = EXCLUDED.tags, meta = EXCLUDED.meta, health_check = EXCLUDED.health_check,
    report_ttl_seconds = EXCLUDED.report_ttl_seconds,
    deregister_after_seconds = EXCLUDED.deregister_after_seconds,
    modify_index = EXCLUDED.modify_index, updated_at = now(), last_report_at = now(),
    status_since = CASE WHEN %(status_kept)s THEN r.status_since ELSE now() END,
    last_passing_at = COALESCE(EXCLUDED.last_passing_at, r.last_passing_at)
RETURNING {_COLUMNS}"""  # noqa: S608


def _instance(row: DictRow) -> Instance:
    return Instance(
        id=row["id"],
        namespace=row["namespace"],
        service=row["service"],
        owner_id=row["owner_id"],
        address=row["address"],
        port=row["port"],
        status=row["status"],
        output=row["output"],
        tags=tuple(row["tags"]),
        meta=row["meta"],
        check=row["health_check"],
        updated_at=row["updated_at"],
    )


async def _lock_index(conn: psycopg.AsyncConnection[DictRow]) -> None:
    """Take the registry's write lock (the counter row) for the rest of the transaction."""
    await conn.execute("SELECT value FROM registry_counter WHERE singleton FOR UPDATE")


async def _next_index(conn: psycopg.AsyncConnection[DictRow]) -> int:
    row = await (
        await conn.execute("UPDATE registry_counter SET value = value + 1 WHERE singleton RETURNING value")
    ).fetchone()
    assert row is not None  # the migration inserts the row
    return int(row["value"])


async def _touch_services(
    conn: psycopg.AsyncConnection[DictRow], namespace: str, services: set[str], index: int
) -> None:
    """Move the services' indexes to ``index`` and tell watchers when the transaction commits."""
    for service in sorted(services):
        await conn.execute(
            "INSERT INTO registry_service_index (namespace, service, modify_index) VALUES (%s, %s, %s)"
            " ON CONFLICT (namespace, service) DO UPDATE SET modify_index = EXCLUDED.modify_index",
            (namespace, service, index),
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{namespace}/{service}"))


class PostgresRegistry(ServiceRegistry):
    """The registry in the platform's own database."""

    def __init__(self, database_url: str, *, pool_max: int = 10) -> None:
        self._url = database_url
        self._pool_max = pool_max

    def _database(self) -> Database:
        return get_database(self._url, self._pool_max)

    async def register(self, instance: Instance) -> Instance:
        """Create or replace the instance (namespace, id); returns it as stored."""
        check = instance.check
        async with self._database().transaction() as conn:
            index = await _next_index(conn)
            old = await (
                await conn.execute(
                    f"SELECT r.service, {_STATUS} AS status FROM registry_instances r"  # noqa: S608
                    " WHERE r.namespace = %s AND r.id = %s",
                    (instance.namespace.value, instance.id),
                )
            ).fetchone()
            row = await (
                await conn.execute(
                    _UPSERT,
                    {
                        "namespace": instance.namespace.value,
                        "id": instance.id,
                        "service": instance.service,
                        "owner_id": instance.owner_id,
                        "address": instance.address,
                        "port": instance.port,
                        "status": instance.status.value,
                        "output": clip_output(instance.output),
                        "tags": list(instance.tags),
                        "meta": Jsonb(instance.meta),
                        "check": Jsonb(check.model_dump(mode="json")) if check else None,
                        "report_ttl": check.report_ttl_seconds if check else None,
                        "deregister_after": check.deregister_after_seconds if check else None,
                        "index": index,
                        "status_kept": old is not None and old["status"] == instance.status.value,
                    },
                )
            ).fetchone()
            assert row is not None
            services = {instance.service} | ({old["service"]} if old else set())
            await _touch_services(conn, instance.namespace.value, services, index)
        return _instance(row)

    async def deregister(self, namespace: Namespace, instance_id: str) -> bool:
        """Remove the instance; False when there was none."""
        async with self._database().transaction() as conn:
            await _lock_index(conn)
            row = await (
                await conn.execute(
                    "DELETE FROM registry_instances WHERE namespace = %s AND id = %s RETURNING service",
                    (namespace.value, instance_id),
                )
            ).fetchone()
            if row is None:
                return False
            await _touch_services(conn, namespace.value, {row["service"]}, await _next_index(conn))
        return True

    async def report_health(
        self, namespace: Namespace, instance_id: str, status: HealthStatus, output: str = ""
    ) -> None:
        """Record a check result (or a TTL pass); raises NotFound for an unknown instance."""
        params = {
            "namespace": namespace.value,
            "id": instance_id,
            "status": status.value,
            "output": clip_output(output),
        }
        # Most reports repeat the status: a heartbeat, no index move and no global lock. The status test sits
        # in the UPDATE itself so a concurrent change of status is never overwritten.
        heartbeat = (
            "UPDATE registry_instances AS r SET output = %(output)s, last_report_at = now(), status = %(status)s,"  # noqa: S608
            # Only a lapsed check differs here (read critical, stored passing): critical since it lapsed.
            f" status_since = CASE WHEN r.status = %(status)s THEN r.status_since ELSE {_CRITICAL_SINCE} END,"
            " last_passing_at = CASE WHEN %(status)s = 'passing' THEN now() ELSE r.last_passing_at END"
            f" WHERE r.namespace = %(namespace)s AND r.id = %(id)s AND {_STATUS} = %(status)s RETURNING r.id"
        )
        async with self._database().transaction() as conn:
            if await (await conn.execute(heartbeat, params)).fetchone():
                return
            await _lock_index(conn)
            if await (await conn.execute(heartbeat, params)).fetchone():
                return  # another report changed the status to this one meanwhile
            row = await (
                await conn.execute(
                    "SELECT service FROM registry_instances WHERE namespace = %(namespace)s AND id = %(id)s", params
                )
            ).fetchone()
            if row is None:
                raise NotFound(f"No instance {instance_id} in {namespace}.")
            index = await _next_index(conn)
            await conn.execute(
                "UPDATE registry_instances AS r SET status = %(status)s, output = %(output)s, status_since = now(),"
                " last_report_at = now(), updated_at = now(), modify_index = %(index)s,"
                " last_passing_at = CASE WHEN %(status)s = 'passing' THEN now() ELSE r.last_passing_at END"
                " WHERE r.namespace = %(namespace)s AND r.id = %(id)s",
                {**params, "index": index},
            )
            await _touch_services(conn, namespace.value, {row["service"]}, index)

    async def services(self, namespace: Namespace, owner_id: UUID | None = None) -> list[ServiceSummary]:
        """The namespace's services with instance and passing counts, only ``owner_id``'s when given."""
        async with self._database().transaction() as conn:
            rows = await (
                await conn.execute(
                    f"SELECT r.service AS name, count(*) AS instances,"  # noqa: S608
                    f" count(*) FILTER (WHERE {_STATUS} = 'passing') AS passing"
                    " FROM registry_instances r"
                    " WHERE r.namespace = %(namespace)s AND (%(owner_id)s::uuid IS NULL OR r.owner_id = %(owner_id)s)"
                    " GROUP BY r.service ORDER BY r.service",
                    {"namespace": namespace.value, "owner_id": owner_id},
                )
            ).fetchall()
        return [ServiceSummary(**row) for row in rows]

    async def instances(
        self, namespace: Namespace, service: str, owner_id: UUID | None = None, passing_only: bool = False
    ) -> list[Instance]:
        """A service's instances ordered by id, only ``owner_id``'s and only passing ones when asked."""
        async with self._database().transaction() as conn:
            rows = await (
                await conn.execute(
                    f"SELECT {_COLUMNS} FROM registry_instances r"  # noqa: S608
                    " WHERE r.namespace = %(namespace)s AND r.service = %(service)s"
                    " AND (%(owner_id)s::uuid IS NULL OR r.owner_id = %(owner_id)s)"
                    f" AND (NOT %(passing_only)s OR {_STATUS} = 'passing')"
                    " ORDER BY r.id",
                    {
                        "namespace": namespace.value,
                        "service": service,
                        "owner_id": owner_id,
                        "passing_only": passing_only,
                    },
                )
            ).fetchall()
        return [_instance(row) for row in rows]

    async def watch(
        self, namespace: Namespace, service: str | None = None, index: int = 0, wait_seconds: float = 60.0
    ) -> WatchResult:
        """Wait until the namespace (or one service in it) changes past ``index``, or ``wait_seconds`` pass;
        index 0 answers at once with the current index."""
        if index <= 0:
            return WatchResult(await self.current_index(namespace, service), True)
        deadline = time.monotonic() + max(0.0, wait_seconds)
        wanted = f"{namespace.value}/{service}" if service else f"{namespace.value}/"
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=10, row_factory=dict_row
            )
        except psycopg.OperationalError as exc:
            raise DependencyError("The database is unavailable; try again shortly.") from exc
        try:
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                # Listening first: whatever commits from here on is either in this read or notified.
                current = await self._current_index(conn, namespace, service)
                while current == index:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    if await self._wait_for_notify(conn, wanted, exact=service is not None, wait_seconds=remaining):
                        current = await self._current_index(conn, namespace, service)
                    else:
                        # Out of time: one last read, in case a notification was lost with a connection.
                        current = await self._current_index(conn, namespace, service)
                        break
        except psycopg.OperationalError as exc:
            raise DependencyError("The database connection was lost during a registry watch.") from exc
        return WatchResult(current, current != index)

    async def current_index(self, namespace: Namespace, service: str | None = None) -> int:
        """The namespace's (or one service's) change index now, without waiting: what ``watch`` waits past."""
        async with self._database().transaction() as conn:
            return await self._current_index(conn, namespace, service)

    @staticmethod
    async def _wait_for_notify(
        conn: psycopg.AsyncConnection[DictRow], wanted: str, *, exact: bool, wait_seconds: float
    ) -> bool:
        """True when a notification for ``wanted`` arrives within ``wait_seconds``."""
        async with aclosing(conn.notifies(timeout=wait_seconds)) as notifications:
            async for notification in notifications:
                payload = notification.payload
                if payload == wanted if exact else payload.startswith(wanted):
                    return True
        return False

    @staticmethod
    async def _current_index(conn: psycopg.AsyncConnection[DictRow], namespace: Namespace, service: str | None) -> int:
        cursor = await conn.execute(
            "SELECT coalesce(max(modify_index), 0) AS value FROM registry_service_index"
            " WHERE namespace = %s AND (%s::text IS NULL OR service = %s)",
            (namespace.value, service, service),
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row["value"])

    async def expire(self, ttl_seconds: float) -> list[Instance]:
        """Remove instances not healthy for ``ttl_seconds`` or critical past their deregister-after.

        Instances whose check lapsed since the last sweep are also written down as critical, so watchers
        hear of the lapse (Consul's agent does that the moment a TTL runs out; here the sweep does).
        """
        async with self._database().transaction() as conn:
            await _lock_index(conn)
            rows = await (
                await conn.execute(
                    f"DELETE FROM registry_instances r WHERE"  # noqa: S608
                    " coalesce(r.last_passing_at, r.registered_at) < now() - make_interval(secs => %(ttl)s)"
                    f" OR (r.deregister_after_seconds IS NOT NULL AND {_STATUS} = 'critical'"
                    f" AND {_CRITICAL_SINCE} < now() - make_interval(secs => r.deregister_after_seconds))"
                    f" RETURNING {_COLUMNS}",
                    {"ttl": float(ttl_seconds)},
                )
            ).fetchall()
            lapsed = await (
                await conn.execute(
                    "SELECT r.namespace, r.service FROM registry_instances r"  # noqa: S608
                    f" WHERE r.status <> 'critical' AND {_LAPSED}"
                )
            ).fetchall()
            if rows or lapsed:
                index = await _next_index(conn)
                await conn.execute(
                    "UPDATE registry_instances r SET status = 'critical', output = 'TTL expired',"  # noqa: S608
                    f" status_since = {_CRITICAL_SINCE}, updated_at = now(), modify_index = %s"
                    f" WHERE r.status <> 'critical' AND {_LAPSED}",
                    (index,),
                )
                by_namespace: dict[str, set[str]] = {}
                for row in [*rows, *lapsed]:
                    by_namespace.setdefault(row["namespace"], set()).add(row["service"])
                for namespace, services in by_namespace.items():
                    await _touch_services(conn, namespace, services, index)
        return [_instance(row) for row in rows]
