"""The process's connection pools against the real PostgreSQL: one per event loop, and the pool of a loop that
has closed gives its server sessions back (a process running loop after loop, as the test runner does, once
held every old loop's connections until PostgreSQL had no slots left)."""

from __future__ import annotations

import asyncio
import secrets

import psycopg

from shared.db import Database, get_database
from tests.conftest import TEST_DATABASE_URL
from tests.support.waiting import wait_until


def _sessions(application_name: str) -> int:
    with psycopg.connect(TEST_DATABASE_URL) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _wait_for_sessions(application_name: str, count: int) -> None:
    wait_until(
        lambda: _sessions(application_name) == count,
        timeout=10,
        interval=0.05,
        message=f"expected {count} server sessions named {application_name}, have {_sessions(application_name)}",
    )


async def _use(url: str, concurrent: int) -> Database:
    database = get_database(url)
    await asyncio.gather(*(database.fetch_one("SELECT pg_sleep(0.2)") for _ in range(concurrent)))
    return database


def test_the_pool_of_a_closed_event_loop_gives_its_connections_back() -> None:
    name = f"berth-pools-{secrets.token_hex(4)}"
    url = f"{TEST_DATABASE_URL}?application_name={name}"

    # GIVEN a loop whose pool opened three connections at once, and then closed
    first = asyncio.run(_use(url, 3))
    _wait_for_sessions(name, 3)

    # WHEN the next loop asks for the same database
    second = asyncio.run(_use(url, 1))

    # THEN it has a pool of its own, and the closed loop's three sessions are gone: one remains
    assert second is not first
    _wait_for_sessions(name, 1)

    # WHEN a third loop asks and closes its pool THEN no session of this database remains
    async def close() -> None:
        await get_database(url).close()

    asyncio.run(close())
    _wait_for_sessions(name, 0)


def test_a_running_loop_keeps_one_pool_per_database() -> None:
    async def twice() -> tuple[Database, Database]:
        one, again = get_database(TEST_DATABASE_URL), get_database(TEST_DATABASE_URL)
        await one.close()
        return one, again

    one, again = asyncio.run(twice())
    assert one is again
