"""The SQL behind the host worker's log shipper: which containers to ship, how far each was shipped, the
lines themselves (container_logs) and their retention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.db import Database

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
# Shipping one container's lines is serialised across processes by an advisory lock in this class (the
# two-key form, so it never meets the single-key locks used elsewhere); the second key hashes the container.
LOG_SHIP_LOCK_CLASS = 7007
PRUNE_BATCH_ROWS = 10_000


def to_microseconds(ts: datetime) -> int:
    """Microseconds since the epoch: the precision PostgreSQL keeps of a timestamptz."""
    return (ts - EPOCH) // ONE_MICROSECOND


@dataclass(frozen=True)
class LogLine:
    """One container log line as Docker stamped it (nanoseconds since the epoch)."""

    ts_ns: int
    stream: str  # 'stdout' | 'stderr'
    text: str

    @property
    def ts_us(self) -> int:
        return self.ts_ns // 1000

    @property
    def ts(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.ts_us)


class LogStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def shippable_on_host(self, host_id: str) -> list[dict[str, Any]]:
        """The host's containers that have a Docker container and are not deleted: id, docker_id, updated_at,
        restart_count and last_ts (the newest line already stored, or None)."""
        return await self._db.fetch_all(
            "SELECT c.id, c.docker_id, c.updated_at, c.restart_count, "
            "(SELECT max(l.ts) FROM container_logs l WHERE l.container_id = c.id) AS last_ts "
            "FROM containers c "
            "WHERE c.host_id = %s AND c.status <> 'deleted' AND c.docker_id IS NOT NULL ORDER BY c.id",
            (host_id,),
        )

    async def last_shipped(self, container_id: str) -> datetime | None:
        """The time of the container's newest stored line, or None."""
        row = await self._db.fetch_one(
            "SELECT max(ts) AS last_ts FROM container_logs WHERE container_id = %s", (container_id,)
        )
        return row["last_ts"] if row else None

    async def insert_lines(self, container_id: str, lines: Sequence[LogLine]) -> int:
        """Store ``lines`` (oldest first) in one COPY, skipping every line at or before the newest one already
        stored (so a concurrent or repeated shipment adds nothing twice). A container deleted meanwhile gets
        nothing. Returns how many were inserted."""
        if not lines:
            return 0
        async with self._db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOG_SHIP_LOCK_CLASS, container_id))
            # KEY SHARE keeps the container from being deleted until the lines are in (the FK would fail).
            cursor = await conn.execute("SELECT id FROM containers WHERE id = %s FOR KEY SHARE", (container_id,))
            if await cursor.fetchone() is None:
                return 0
            cursor = await conn.execute(
                "SELECT max(ts) AS last_ts FROM container_logs WHERE container_id = %s", (container_id,)
            )
            row = await cursor.fetchone()
            after_us = to_microseconds(row["last_ts"]) if row and row["last_ts"] is not None else -1
            fresh = [line for line in lines if line.ts_us > after_us]
            if not fresh:
                return 0
            async with (
                conn.cursor() as copy_cursor,
                copy_cursor.copy("COPY container_logs (container_id, ts, stream, text) FROM STDIN") as copy,
            ):
                for line in fresh:
                    await copy.write_row((container_id, line.ts, line.stream, line.text))
            return len(fresh)

    async def prune(self, retention_hours: float) -> int:
        """Delete lines older than the retention window (by the ts index, in batches, each its own
        transaction); returns how many."""
        cutoff = datetime.now(UTC) - timedelta(hours=retention_hours)
        deleted = 0
        while True:
            batch = await self._db.execute(
                "DELETE FROM container_logs WHERE id IN (SELECT id FROM container_logs WHERE ts < %s LIMIT %s)",
                (cutoff, PRUNE_BATCH_ROWS),
            )
            deleted += batch
            if batch < PRUNE_BATCH_ROWS:
                return deleted
