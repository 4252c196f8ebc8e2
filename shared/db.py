"""PostgreSQL access: one async connection pool per process (per event loop), opened on first use.

Functions run under Mangum with lifespan off, so nothing is opened at import time; the pool is created
by the first request and reused by every later one, as a Lambda execution environment would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.errors import DependencyError


class Database:
    """A pool of connections to one database; rows come back as dicts."""

    def __init__(self, url: str, max_size: int = 10) -> None:
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=10,
            kwargs={"row_factory": dict_row, "autocommit": False},
        )
        self._opened = False
        # Concurrent first requests must not open the pool twice (psycopg_pool asserts on that).
        self._open_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                await self._pool.open(wait=True, timeout=10)
                self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        try:
            await self.open()
            async with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise DependencyError("The database is unavailable; try again shortly.") from exc


_databases: dict[tuple[int, str], Database] = {}


def get_database(url: str, max_size: int = 10) -> Database:
    """The process's pool for ``url`` on the running event loop (a cached factory)."""
    key = (id(asyncio.get_running_loop()), url)
    database = _databases.get(key)
    if database is None:
        database = _databases[key] = Database(url, max_size)
    return database
