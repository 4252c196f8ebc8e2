"""Host-name claims for the shared ports: data access, scoped to the owner except for the one question that
must see every tenant (is this name verified by someone else?). The partial unique index on verified names
is what keeps a name from belonging to two tenants. A change to a claim and its listeners locks the listeners
first, then the claim: the order a listener's delete takes them in (see ``_lock_listeners_first``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.rows import DictRow

from shared.db import Database

_COLUMNS = "id, owner_id, hostname, token, verified_at, verified_by, listener_id, created_at, updated_at"


class HostnameTaken(Exception):
    """Another tenant holds the name (verified), or the owner already claimed it."""


async def _lock_listeners_first(
    conn: AsyncConnection[DictRow], owner_id: str, claim_id: str, new_listener_id: str | None = None
) -> None:
    """Lock the listeners a change of this claim touches (the one it routes to now, and ``new_listener_id``)
    before the claim's row. Deleting a listener locks the listener and then, by its ON DELETE SET NULL, the
    claims routed to it: a change that locked the claim first and the listener second could deadlock with it
    (the database would break the tie by failing one of the two, a 503)."""
    await conn.execute(
        "SELECT id FROM listeners WHERE owner_id = %s AND id IN (SELECT listener_id FROM hostnames WHERE id = %s "
        "AND owner_id = %s UNION ALL SELECT %s::uuid) ORDER BY id FOR UPDATE",
        (owner_id, claim_id, owner_id, new_listener_id),
    )


class HostnameStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def verified_by_other(self, owner_id: str, hostname: str) -> bool:
        row = await self._db.fetch_one(
            "SELECT 1 AS taken FROM hostnames WHERE hostname = %s AND verified_at IS NOT NULL AND owner_id <> %s",
            (hostname, owner_id),
        )
        return row is not None

    async def create(self, owner_id: str, hostname: str, token: str) -> dict[str, Any]:
        """A new pending claim; HostnameTaken when the owner already claimed the name."""
        try:
            row = await self._db.fetch_one(
                f"INSERT INTO hostnames (owner_id, hostname, token) VALUES (%s, %s, %s) RETURNING {_COLUMNS}",
                (owner_id, hostname, token),
            )
        except errors.UniqueViolation as exc:
            raise HostnameTaken from exc
        assert row is not None
        return row

    async def get(self, owner_id: str, claim_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM hostnames WHERE id = %s AND owner_id = %s", (claim_id, owner_id)
        )

    async def mark_verified(self, owner_id: str, claim_id: str, method: str) -> dict[str, Any] | None:
        """Verified now by ``method``; HostnameTaken when another tenant's claim was verified first."""
        try:
            async with self._db.transaction() as conn:
                await _lock_listeners_first(conn, owner_id, claim_id)
                cursor = await conn.execute(
                    "UPDATE hostnames SET verified_at = now(), verified_by = %s, updated_at = now() "
                    f"WHERE id = %s AND owner_id = %s RETURNING {_COLUMNS}",
                    (method, claim_id, owner_id),
                )
                row = await cursor.fetchone()
                if row is not None and row["listener_id"] is not None:
                    # Attached before it was proven: it starts routing now (lb-runtime sees listener changes).
                    await conn.execute("UPDATE listeners SET updated_at = now() WHERE id = %s", (row["listener_id"],))
        except errors.UniqueViolation as exc:
            raise HostnameTaken from exc
        return row

    async def attach(self, owner_id: str, claim_id: str, listener_id: str | None) -> dict[str, Any] | None:
        """Route the name to ``listener_id`` (None: to nothing); the listener's change time moves too."""
        async with self._db.transaction() as conn:
            await _lock_listeners_first(conn, owner_id, claim_id, listener_id)
            cursor = await conn.execute(
                "SELECT listener_id FROM hostnames WHERE id = %s AND owner_id = %s FOR UPDATE", (claim_id, owner_id)
            )
            before = await cursor.fetchone()
            if before is None:
                return None
            cursor = await conn.execute(
                "UPDATE hostnames SET listener_id = %s, updated_at = now() "
                f"WHERE id = %s AND owner_id = %s RETURNING {_COLUMNS}",
                (listener_id, claim_id, owner_id),
            )
            row = await cursor.fetchone()
            # lb-runtime notices routing changes by the listeners' updated_at (the old one's and the new one's).
            touched = [str(value) for value in (before["listener_id"], listener_id) if value]
            await conn.execute(
                "UPDATE listeners SET updated_at = now() WHERE owner_id = %s AND id = ANY(%s::uuid[])",
                (owner_id, touched),
            )
        return row

    async def delete(self, owner_id: str, claim_id: str) -> dict[str, Any] | None:
        async with self._db.transaction() as conn:
            await _lock_listeners_first(conn, owner_id, claim_id)
            cursor = await conn.execute(
                f"DELETE FROM hostnames WHERE id = %s AND owner_id = %s RETURNING {_COLUMNS}", (claim_id, owner_id)
            )
            row = await cursor.fetchone()
            if row is not None and row["listener_id"] is not None:
                await conn.execute("UPDATE listeners SET updated_at = now() WHERE id = %s", (row["listener_id"],))
        return row

    async def page(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the (created_at, id) of the previous page's last row."""
        conditions = "owner_id = %s"
        params: list[Any] = [owner_id]
        if after is not None:
            conditions += " AND (created_at, id) < (%s, %s)"
            params.extend(after)
        return await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM hostnames WHERE {conditions} ORDER BY created_at DESC, id DESC LIMIT %s",
            (*params, limit),
        )
