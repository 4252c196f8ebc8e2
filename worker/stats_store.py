"""The SQL behind the host worker's container stats sampler: which containers to sample, and the samples."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.container_stats import STAT_FIELDS
from shared.db import Database


class StatsStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def running_on_host(self, host_id: str) -> list[dict[str, Any]]:
        """The host's running containers that have a Docker container: id and docker_id."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT id, docker_id FROM containers "
                "WHERE host_id = %s AND status = 'running' AND docker_id IS NOT NULL ORDER BY id",
                (host_id,),
            )
            return await cursor.fetchall()

    async def insert(self, samples: Sequence[tuple[str, datetime, dict[str, Any]]]) -> int:
        """Insert (container_id, ts, values) samples; a container deleted meanwhile is skipped. Returns how
        many were inserted."""
        if not samples:
            return 0
        columns = ", ".join(STAT_FIELDS)
        placeholders = ", ".join(["%s"] * len(STAT_FIELDS))
        inserted = 0
        async with self._db.transaction() as conn:
            for container_id, ts, values in samples:
                # INSERT ... SELECT from containers: a row removed since the round began adds no sample.
                cursor = await conn.execute(
                    f"INSERT INTO container_stats (container_id, ts, {columns}) "
                    f"SELECT id, %s, {placeholders} FROM containers WHERE id = %s "
                    "ON CONFLICT (container_id, ts) DO NOTHING",
                    (ts, *(values.get(name) for name in STAT_FIELDS), container_id),
                )
                inserted += cursor.rowcount
        return inserted

    async def prune(self, retention_hours: float) -> int:
        """Delete samples older than the retention window; returns how many."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM container_stats WHERE ts < now() - make_interval(secs => %s)",
                (float(retention_hours) * 3600.0,),
            )
            return cursor.rowcount
