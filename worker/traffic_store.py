"""Traffic history in PostgreSQL: the recorder's cursor per lb-runtime, the per-interval samples at both
resolutions, and their retention. One round runs in one transaction under the cursor row's lock, so two
workers never record the same interval twice (the second one waits, then sees the newer cursor)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from shared.db import Database
from shared.traffic_history import RESOLUTIONS, Figures, Reading, delta, fold_routes


class TrafficStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def record(self, source: str, reading: Reading, interval_seconds: int) -> tuple[datetime, int] | None:
        """Under ``source``'s cursor lock: the deltas since the cursor's reading (per reported id, a host
        route's its own) go into the samples of the current interval (10 s rows and their minute's 60 s row),
        each host route's into its listener's rows, and ``reading`` becomes the cursor. The interval's start and
        the number of rows written; None for the first reading (nothing to compare)."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO traffic_cursors (source, read_at, counters) VALUES (%s, now(), '{}') "
                "ON CONFLICT (source) DO NOTHING",
                (source,),
            )
            cursor = await conn.execute(
                "SELECT read_at, counters, now() AS now FROM traffic_cursors WHERE source = %s FOR UPDATE", (source,)
            )
            row = await cursor.fetchone()
            assert row is not None
            previous: dict[str, Any] = row["counters"] or {}
            await conn.execute(
                "UPDATE traffic_cursors SET read_at = now(), counters = %s WHERE source = %s",
                (Jsonb({f"{lid}/{inst}": fig.as_json() for (lid, inst), fig in reading.items()}), source),
            )
            if not previous:
                return None
            now: datetime = row["now"]
            changes: Reading = {}
            for (reported_id, instance), figures in reading.items():
                before = previous.get(f"{reported_id}/{instance}")
                changes[reported_id, instance] = delta(
                    figures, Figures.from_json(before) if isinstance(before, dict) else None
                )
            written = 0
            # A host route's traffic (on a shared port) is written as its listener's, with the listener's own.
            for (listener_id, instance), change in fold_routes(changes).items():
                for resolution in RESOLUTIONS:
                    written += await _add_sample(conn, listener_id, instance, resolution, now, change)
            return now, written

    async def expire(self) -> int:
        """Drop samples past their resolution's retention; how many."""
        removed = 0
        for resolution, keep_seconds in RESOLUTIONS.items():
            removed += await self._db.execute(
                "DELETE FROM traffic_samples WHERE resolution = %s AND ts < now() - make_interval(secs => %s)",
                (resolution, keep_seconds),
            )
        return removed


async def _add_sample(
    conn: Any, listener_id: str, instance: str, resolution: int, now: datetime, change: Figures
) -> int:
    """Add ``change`` to the sample of ``now``'s interval at ``resolution`` (created when missing; a
    listener lb-runtime still reports but that is gone from the table writes nothing)."""
    cursor = await conn.execute(
        "INSERT INTO traffic_samples (listener_id, instance, resolution, ts, requests, errors_connect, "
        "responses_4xx, responses_5xx, latency_buckets, latency_sum, open_connections, bytes_in, bytes_out) "
        "SELECT l.id, %(instance)s, %(resolution)s, "
        "to_timestamp(floor(extract(epoch FROM %(now)s::timestamptz) / %(resolution)s) * %(resolution)s), "
        "%(requests)s, %(errors_connect)s, %(responses_4xx)s, %(responses_5xx)s, %(buckets)s, %(latency_sum)s, "
        "%(open_connections)s, %(bytes_in)s, %(bytes_out)s FROM listeners l WHERE l.id::text = %(listener_id)s "
        "ON CONFLICT (listener_id, resolution, instance, ts) DO UPDATE SET "
        "requests = traffic_samples.requests + excluded.requests, "
        "errors_connect = traffic_samples.errors_connect + excluded.errors_connect, "
        "responses_4xx = traffic_samples.responses_4xx + excluded.responses_4xx, "
        "responses_5xx = traffic_samples.responses_5xx + excluded.responses_5xx, "
        "latency_buckets = ARRAY(SELECT a + b FROM unnest(traffic_samples.latency_buckets, excluded.latency_buckets) "
        "AS t(a, b)), "
        "latency_sum = traffic_samples.latency_sum + excluded.latency_sum, "
        "open_connections = greatest(traffic_samples.open_connections, excluded.open_connections), "
        "bytes_in = traffic_samples.bytes_in + excluded.bytes_in, "
        "bytes_out = traffic_samples.bytes_out + excluded.bytes_out",
        {
            "listener_id": listener_id,
            "instance": instance,
            "resolution": resolution,
            "now": now,
            "requests": change.requests,
            "errors_connect": change.errors_connect,
            "responses_4xx": change.responses_4xx,
            "responses_5xx": change.responses_5xx,
            "buckets": change.latency_buckets,
            "latency_sum": change.latency_sum,
            "open_connections": change.open_connections,
            "bytes_in": change.bytes_in,
            "bytes_out": change.bytes_out,
        },
    )
    return int(cursor.rowcount or 0)
