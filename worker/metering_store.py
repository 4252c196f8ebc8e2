"""The SQL behind metering: what happened in a window (container lifecycle events, counter samples, stored
images, listener traffic history), the usage records with their rollups, and the cursor of how far metering
got."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.db import Database
from shared.traffic_history import LISTENER_TOTAL

# Container statuses in which Docker runs the container: its replica and its memory reservation are billed.
RUNNING_STATUSES = ("starting", "running", "unhealthy", "stopping")
# The advisory lock a metering round of the fleet holds (every worker runs the task; one meters at a time).
ROUND_LOCK = "berth.metering"
# The traffic history resolution listeners are metered from (its rows are the finest, and fit any window).
TRAFFIC_RESOLUTION = 10


@dataclass(frozen=True)
class UsageRecord:
    """A meter's quantity for one subject of one tenant in one window."""

    owner_id: str
    subject_kind: str
    subject_id: str
    service: str | None
    meter: str
    window_start: datetime
    window_end: datetime
    quantity: Decimal

    @property
    def id(self) -> str:
        """Deterministic: the same tenant, subject, meter and window always make the same id."""
        return (
            f"{self.owner_id}/{self.subject_kind}/{self.subject_id}/{self.meter}/"
            f"{int(self.window_start.timestamp())}-{int(self.window_end.timestamp())}"
        )


class MeteringStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    @asynccontextmanager
    async def round_lock(self) -> AsyncIterator[bool]:
        """Whether this process may meter now: a transaction-level advisory lock, held for the block, that no
        other process holds (it goes with the connection of a process killed meanwhile)."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s)) AS claimed", (ROUND_LOCK,))
            row = await cursor.fetchone()
            yield bool(row and row["claimed"])

    async def cursor(self, name: str) -> datetime | None:
        """The end of the last window metered by ``name`` (None before the first round)."""
        row = await self._db.fetch_one("SELECT metered_until FROM meter_cursors WHERE name = %s", (name,))
        return row["metered_until"] if row else None

    async def advance(self, name: str, until: datetime) -> None:
        """Move the cursor forward to ``until`` (never back)."""
        await self._db.execute(
            "INSERT INTO meter_cursors (name, metered_until) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
            "SET metered_until = greatest(meter_cursors.metered_until, excluded.metered_until), updated_at = now()",
            (name, until),
        )

    async def earliest_activity(self) -> datetime | None:
        """When the first thing worth metering happened (a container event, a sample, an image, traffic)."""
        row = await self._db.fetch_one(
            "SELECT least((SELECT min(ts) FROM container_events), (SELECT min(ts) FROM container_stats), "
            "(SELECT min(created_at) FROM images WHERE upload_bytes IS NOT NULL), "
            "(SELECT min(ts) FROM traffic_samples WHERE resolution = %s)) AS earliest",
            (TRAFFIC_RESOLUTION,),
        )
        return row["earliest"] if row else None

    async def lifecycles(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Each container that may have run in [start, end): its owner, service, memory, status just before
        ``start`` and its status changes within the window (times and statuses, in order)."""
        return await self._db.fetch_all(
            "SELECT c.id, c.owner_id, c.service, c.memory_mb, "
            "(SELECT e.status FROM container_events e WHERE e.container_id = c.id AND e.ts < %(start)s "
            " ORDER BY e.ts DESC, e.id DESC LIMIT 1) AS status_before, "
            "ARRAY(SELECT e.ts FROM container_events e WHERE e.container_id = c.id "
            " AND e.ts >= %(start)s AND e.ts < %(end)s ORDER BY e.ts, e.id) AS event_times, "
            "ARRAY(SELECT e.status FROM container_events e WHERE e.container_id = c.id "
            " AND e.ts >= %(start)s AND e.ts < %(end)s ORDER BY e.ts, e.id) AS event_statuses "
            "FROM containers c WHERE c.created_at < %(end)s AND (c.status <> 'deleted' OR c.updated_at >= %(start)s)",
            {"start": start, "end": end},
        )

    async def counter_samples(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The CPU and egress counters of every sample taken in [start, end), with each container's last
        sample before ``start`` (``baseline`` true) to take the first delta from; by container, then time."""
        return await self._db.fetch_all(
            "WITH inside AS (SELECT container_id, ts, cpu_usage_ns, net_tx_bytes FROM container_stats "
            "  WHERE ts >= %(start)s AND ts < %(end)s), "
            "before AS (SELECT DISTINCT ON (s.container_id) s.container_id, s.ts, s.cpu_usage_ns, s.net_tx_bytes "
            "  FROM container_stats s WHERE s.container_id IN (SELECT container_id FROM inside) "
            "  AND s.ts < %(start)s ORDER BY s.container_id, s.ts DESC) "
            "SELECT x.*, c.owner_id, c.service FROM ("
            "  SELECT *, false AS baseline FROM inside UNION ALL SELECT *, true AS baseline FROM before) x "
            "JOIN containers c ON c.id = x.container_id ORDER BY x.container_id, x.ts",
            {"start": start, "end": end},
        )

    async def proxied_answers(self, start: datetime, end: datetime) -> dict[str, int]:
        """Per container, the bytes lb-runtime received from it in [start, end): the instance rows of every
        listener's 10 s traffic history that start in the window (an instance id is its container's id)."""
        rows = await self._db.fetch_all(
            "SELECT c.id, sum(t.bytes_out) AS bytes FROM traffic_samples t "
            "JOIN containers c ON c.id::text = t.instance "
            "WHERE t.resolution = %(resolution)s AND t.instance <> %(total)s AND t.ts >= %(start)s AND t.ts < %(end)s "
            "GROUP BY c.id",
            {"resolution": TRAFFIC_RESOLUTION, "total": LISTENER_TOTAL, "start": start, "end": end},
        )
        return {str(row["id"]): int(row["bytes"]) for row in rows}

    async def stored_images(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Images stored (uploaded, not deleted) at some point in [start, end): owner, bytes, created_at."""
        return await self._db.fetch_all(
            "SELECT id, owner_id, upload_bytes, created_at FROM images "
            "WHERE upload_bytes IS NOT NULL AND created_at < %s",
            (end,),
        )

    async def listener_traffic(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Per listener with traffic history in [start, end): owner, service and the requests, bytes in and bytes
        out of its 10 s rows that start in the window, the listener's own rows only (its instances' rows are a
        breakdown of the requests, and count bytes on the instances' side)."""
        return await self._db.fetch_all(
            "SELECT l.id, l.owner_id, l.service, sum(t.requests) AS requests, sum(t.bytes_in) AS bytes_in, "
            "sum(t.bytes_out) AS bytes_out FROM traffic_samples t "
            "JOIN listeners l ON l.id = t.listener_id "
            "WHERE t.resolution = %(resolution)s AND t.instance = %(total)s AND t.ts >= %(start)s AND t.ts < %(end)s "
            "GROUP BY l.id, l.owner_id, l.service",
            {"resolution": TRAFFIC_RESOLUTION, "total": LISTENER_TOTAL, "start": start, "end": end},
        )

    async def write(self, records: Sequence[UsageRecord]) -> int:
        """Insert the records and, for each one inserted, add it to its hourly rollup: one transaction. A
        record whose id exists already changes nothing. Returns how many were inserted."""
        inserted = 0
        async with self._db.transaction() as conn:
            # One order in every writer, so two workers metering the same window never deadlock.
            for record in sorted(records, key=lambda r: r.id):
                cursor = await conn.execute(
                    "INSERT INTO usage_records (id, owner_id, subject_kind, subject_id, service, meter, "
                    "window_start, window_end, quantity) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING RETURNING id",
                    (
                        record.id,
                        record.owner_id,
                        record.subject_kind,
                        record.subject_id,
                        record.service,
                        record.meter,
                        record.window_start,
                        record.window_end,
                        record.quantity,
                    ),
                )
                if await cursor.fetchone() is None:
                    continue
                inserted += 1
                await conn.execute(
                    "INSERT INTO usage_rollups (owner_id, hour, meter, service, quantity) "
                    "VALUES (%s, date_trunc('hour', %s::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', "
                    "%s, %s, %s) ON CONFLICT (owner_id, hour, meter, service) "
                    "DO UPDATE SET quantity = usage_rollups.quantity + excluded.quantity",
                    (record.owner_id, record.window_start, record.meter, record.service or "", record.quantity),
                )
        return inserted
