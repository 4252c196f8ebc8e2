"""PostgreSQL access: one async connection pool per process (per event loop), opened on first use.

Functions run under Mangum with lifespan off, so nothing is opened at import time; the pool is created
by the first request and reused by every later one, as a Lambda execution environment would.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, LiteralString

import psycopg
from psycopg.abc import Params
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.errors import DependencyError

Row = dict[str, Any]
# The transaction ``Database.one_transaction`` holds in this task, if any.
_HELD: ContextVar[tuple[Database, psycopg.AsyncConnection[DictRow]] | None] = ContextVar("held", default=None)


@asynccontextmanager
async def _savepoint(conn: psycopg.AsyncConnection[DictRow]) -> AsyncIterator[None]:
    """A block inside a held transaction that acts as a transaction of its own would: undone on an error,
    and undone (not committed) when a statement in it failed even if the error was caught inside."""
    await conn.execute("SAVEPOINT held")
    try:
        yield
    except BaseException:
        if not conn.closed:
            await conn.execute("ROLLBACK TO SAVEPOINT held")
            await conn.execute("RELEASE SAVEPOINT held")
        raise
    if conn.info.transaction_status == TransactionStatus.INERROR:
        await conn.execute("ROLLBACK TO SAVEPOINT held")
    await conn.execute("RELEASE SAVEPOINT held")


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
            configure=self._track,
        )
        self._opened = False
        # Every connection the pool made, so that a pool whose event loop is gone can still let them go.
        self._connections: weakref.WeakSet[psycopg.AsyncConnection[DictRow]] = weakref.WeakSet()
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

    async def _track(self, conn: psycopg.AsyncConnection[DictRow]) -> None:
        self._connections.add(conn)

    def abandon(self) -> None:
        """End the server sessions of a pool whose event loop has closed (it cannot be closed through that
        loop any more): without this each would hold a PostgreSQL connection slot until the process exits."""
        for conn in list(self._connections):
            conn.pgconn.finish()
        self._connections.clear()
        self._opened = False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
        """A connection inside one transaction: committed on success, rolled back on error. Inside
        ``one_transaction`` it is that transaction's connection (a savepoint: an error undoes only this block)."""
        held = _HELD.get()
        if held is not None and held[0] is self:
            async with _savepoint(held[1]):
                yield held[1]
            return
        try:
            await self.open()
            async with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise DependencyError("The database is unavailable; try again shortly.") from exc

    @asynccontextmanager
    async def one_transaction(self) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
        """One transaction that every query of this database inside the block joins (whichever store runs
        it), committed when the block ends: how a check and the write it guards become atomic (quotas). Run
        nothing concurrently inside it, nor anything that must see the block's writes committed."""
        async with self.transaction() as conn:
            token = _HELD.set((self, conn))
            try:
                yield conn
            finally:
                _HELD.reset(token)

    # One statement in its own transaction: most store methods are exactly this. Code that needs several
    # statements (or a lock) in one transaction uses ``transaction()`` itself.

    async def fetch_one(self, sql: LiteralString, params: Params | None = None) -> Row | None:
        """The first row ``sql`` returns (None when none), committed."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()

    async def fetch_all(self, sql: LiteralString, params: Params | None = None) -> list[Row]:
        """Every row ``sql`` returns, committed."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def execute(self, sql: LiteralString, params: Params | None = None) -> int:
        """Run ``sql`` and commit; how many rows it changed."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount


# Pools by event loop and URL. The loop is kept with its pools: its id cannot be reused by a new loop before
# the entry is dropped, which happens at the first call after the loop closed (a process that runs one loop
# after another, as a test runner does, otherwise kept every old loop's connections open).
_databases: dict[tuple[int, str], tuple[asyncio.AbstractEventLoop, Database]] = {}


def get_database(url: str, max_size: int = 10) -> Database:
    """The process's pool for ``url`` on the running event loop (a cached factory)."""
    loop = asyncio.get_running_loop()
    for key, (other, database) in list(_databases.items()):
        if other.is_closed():
            del _databases[key]
            database.abandon()
    entry = _databases.get((id(loop), url))
    if entry is None:
        entry = _databases[(id(loop), url)] = (loop, Database(url, max_size))
    return entry[1]
