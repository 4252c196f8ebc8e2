"""Request trails in PostgreSQL: a job's lines are kept under its sender and request, read back per caller
only (two callers sharing a request id see their own lines), lines past retention are deleted, and a trail
that cannot be kept fails nothing."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from functions.alerts.store import AlertStore
from shared.db import Database, get_database
from shared.observability import RequestTrail, TrailLine, get_logger, log_event, request_id_var, user_id_var
from shared.request_trail import RequestTrailStore, job_trail, keep_trail

logger = get_logger("trail-test")


@pytest.fixture
async def database() -> Database:
    return get_database(os.environ["BERTH_DATABASE_URL"])


@pytest.fixture
async def users(database: Database) -> AsyncIterator[list[str]]:
    """Two users; removed afterwards (their lines by cascade)."""
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    async with database.transaction() as conn:
        for user_id in ids:
            await conn.execute(
                "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')",
                (user_id, f"trail-{user_id}@example.com"),
            )
    yield ids
    async with database.transaction() as conn:
        await conn.execute("DELETE FROM users WHERE id = ANY(%s)", (ids,))


async def test_a_jobs_lines_are_kept_under_its_sender_and_read_by_them_only(
    database: Database, users: list[str]
) -> None:
    store, reader = RequestTrailStore(database), AlertStore(database)
    request_id = f"shared-{uuid.uuid4().hex[:8]}"
    # GIVEN two callers who used one request id, each with a job of that request run by a worker
    for owner, n in ((users[0], 2), (users[1], 1)):
        async with job_trail(store, request_id, owner, "job-x"):
            # THEN the job's lines are logged under the request and its sender
            assert (request_id_var.get(), user_id_var.get()) == (request_id, owner)
            for i in range(n):
                log_event(logger, "step", i=i, secret="s")
    assert (request_id_var.get(), user_id_var.get()) == ("-", "-")
    # AND a job without a request or a sender keeps nothing
    async with job_trail(store, None, users[0], "job-y"):
        assert request_id_var.get() == "job-y"
        log_event(logger, "unattributed")
    # WHEN each reads the request THEN they get their own lines, in order, redacted, and never the other's
    mine = await reader.request_events(users[0], request_id, 100)
    theirs = await reader.request_events(users[1], request_id, 100)
    assert [(row["source"], row["message"], row["fields"]) for row in mine] == [
        ("worker", "step", {"i": 0, "secret": "[redacted]"}),
        ("worker", "step", {"i": 1, "secret": "[redacted]"}),
    ]
    assert [row["fields"]["i"] for row in theirs] == [0]
    assert await reader.request_events(users[0], "job-y", 100) == []


async def test_lines_past_retention_are_deleted_and_a_trail_that_cannot_be_kept_fails_nothing(
    database: Database, users: list[str]
) -> None:
    store, reader = RequestTrailStore(database), AlertStore(database)
    # GIVEN a trail with a line from 5 hours ago and one from now
    trail = RequestTrail([TrailLine(datetime.now(UTC) - timedelta(hours=5), "old", {})])
    trail.add("new", {})
    await store.record(users[0], "r-retention", "function", "images", trail)
    # WHEN lines older than 4 hours are pruned THEN only the new one stays
    assert await store.prune(4) >= 1
    assert [row["message"] for row in await reader.request_events(users[0], "r-retention", 10)] == ["new"]
    # AND a trail of a caller that is gone (or of a broken id) is dropped with a warning, not raised
    await keep_trail(store, str(uuid.uuid4()), "r-gone", "function", "images", trail)
    await keep_trail(store, "not-a-uuid", "r-gone", "function", "images", trail)
