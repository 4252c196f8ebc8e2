"""Request trails: the log lines one caller's request caused, in the function that answered it and in the
host workers that ran the jobs it sent, kept in PostgreSQL (``request_events``) for ``GET
/api/requests/{request_id}`` and ``berth logs --request``.

What is kept: every ``log_event`` line written while the request, or a job it sent, ran (whatever the log
level), its fields redacted as in the logs (``shared.observability.redact``), and one ``request answered``
line for each request of a known caller that changed something (any method but GET, HEAD and OPTIONS),
logged something or failed (5xx): a plain read keeps nothing. A trail belongs to the caller who sent the
request (a job carries its sender, ``shared.jobs.Job.owner_id``), never to the request id alone: the id is
the caller's to choose, so two callers may use one, and each reads only their own lines. At most
``MAX_TRAIL_LINES`` lines per request and process are kept (the rest are counted in one last line), string
values are cut at ``MAX_VALUE_CHARS``, and the host workers delete lines older than
``request_trail_retention_hours``. Keeping a trail never fails the request or the job: a database error is
logged and those lines are lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from shared.db import Database
from shared.errors import DependencyError
from shared.observability import RequestTrail, TrailLine, get_logger, request_id_var, trail_var, user_id_var

Source = Literal["function", "worker"]
MAX_MESSAGE_CHARS = 500
MAX_VALUE_CHARS = 1000
MAX_FIELDS = 40
PRUNE_BATCH_ROWS = 5000
_INSERT = (
    "INSERT INTO request_events (owner_id, request_id, source, service, at, message, fields) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


def _bounded(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON holds it, strings cut at ``MAX_VALUE_CHARS`` and nesting at a few levels."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict) and depth < 3:
        return {str(key)[:100]: _bounded(item, depth + 1) for key, item in list(value.items())[:MAX_FIELDS]}
    if isinstance(value, list | tuple | set | frozenset) and depth < 3:
        return [_bounded(item, depth + 1) for item in list(value)[:MAX_FIELDS]]
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_VALUE_CHARS].replace("\x00", "\ufffd")


def stored_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a line's (already redacted) fields."""
    kept = _bounded(fields)
    return kept if isinstance(kept, dict) else {}


class RequestTrailStore:
    """The ``request_events`` table: trails written by the functions and the host workers."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record(self, owner_id: str, request_id: str, source: Source, service: str, trail: RequestTrail) -> int:
        """Keep ``trail``'s lines under ``owner_id`` and ``request_id``; how many rows were written."""
        lines = list(trail.lines)
        if trail.dropped:
            last = lines[-1].at if lines else datetime.now(UTC)
            lines.append(TrailLine(last, f"{trail.dropped} more lines not kept", {"dropped": trail.dropped}))
        if not lines:
            return 0
        rows = [
            (
                owner_id,
                request_id[:128],
                source,
                service[:64],
                line.at,
                line.message[:MAX_MESSAGE_CHARS],
                Jsonb(stored_fields(line.fields)),
            )
            for line in lines
        ]
        async with self._db.transaction() as conn, conn.cursor() as cursor:
            await cursor.executemany(_INSERT, rows)
        return len(rows)

    async def prune(self, retention_hours: float) -> int:
        """Delete lines older than the retention window, in batches (each its own transaction); how many."""
        cutoff = datetime.now(UTC) - timedelta(hours=retention_hours)
        deleted = 0
        while True:
            batch = await self._db.execute(
                "DELETE FROM request_events WHERE id IN (SELECT id FROM request_events WHERE at < %s LIMIT %s)",
                (cutoff, PRUNE_BATCH_ROWS),
            )
            deleted += batch
            if batch < PRUNE_BATCH_ROWS:
                return deleted


async def keep_trail(
    store: RequestTrailStore, owner_id: str, request_id: str, source: Source, service: str, trail: RequestTrail
) -> None:
    """``store.record``, a database error logged rather than raised."""
    try:
        await store.record(owner_id, request_id, source, service, trail)
    except (DependencyError, psycopg.Error) as exc:
        get_logger(service).warning("request trail not kept", extra={"error": str(exc), "lines": len(trail.lines)})


@asynccontextmanager
async def job_trail(
    store: RequestTrailStore | None, request_id: str | None, owner_id: str | None, fallback_request_id: str
) -> AsyncIterator[None]:
    """Run a job's block under the request id (``fallback_request_id`` when it has none) and sender it carries;
    its ``log_event`` lines are kept in the sender's trail of that request when the block returns."""
    trail = RequestTrail()
    tokens = (
        request_id_var.set(request_id or fallback_request_id),
        user_id_var.set(owner_id or "-"),
        trail_var.set(trail),
    )
    try:
        yield
    finally:
        trail_var.reset(tokens[2])
        user_id_var.reset(tokens[1])
        request_id_var.reset(tokens[0])
    # Not in ``finally``: a cancelled job (a forced stop) writes nothing.
    if store is not None and request_id and owner_id and trail.lines:
        await keep_trail(store, owner_id, request_id, "worker", "worker", trail)
