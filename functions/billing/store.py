"""The SQL behind the billing routes: usage from the hourly rollups, users' billing state, and stopping a
suspended user's containers. Plans and invoices have stores of their own in ``shared.billing``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.db import Database

# group_by -> (the column it adds, its SQL expression)
_GROUPS = {
    "meter": ("NULL::text", "NULL::text"),
    "service": ("service", "NULL::text"),
    "day": ("NULL::text", "to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
}
_USER_COLUMNS = "id, email, plan, suspended_at, suspended_reason, created_at"


class BillingStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def usage(self, owner_id: str, start: datetime, end: datetime, group_by: str) -> list[dict[str, Any]]:
        """Sums of the owner's rollups with ``start <= hour < end``, by meter and the grouping asked."""
        service, day = _GROUPS[group_by]
        return await self._db.fetch_all(
            f"SELECT meter, {service} AS service, {day} AS day, sum(quantity) AS quantity "
            "FROM usage_rollups WHERE owner_id = %s AND hour >= %s AND hour < %s "
            "GROUP BY 1, 2, 3 ORDER BY 3 NULLS FIRST, 2 NULLS FIRST, 1",
            (owner_id, start, end),
        )

    async def period_quantities(self, owner_ids: list[str], start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Per owner and meter, the rollups' sums in [start, end)."""
        return await self._db.fetch_all(
            "SELECT owner_id, meter, sum(quantity) AS quantity FROM usage_rollups "
            "WHERE owner_id = ANY(%s::uuid[]) AND hour >= %s AND hour < %s GROUP BY owner_id, meter",
            (owner_ids, start, end),
        )

    async def users(self, limit: int, before: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Accounts (not deleted), newest first, a page at a time."""
        if before is None:
            return await self._db.fetch_all(
                f"SELECT {_USER_COLUMNS} FROM users WHERE status <> 'deleted' "
                "ORDER BY created_at DESC, id DESC LIMIT %s",
                (limit,),
            )
        return await self._db.fetch_all(
            f"SELECT {_USER_COLUMNS} FROM users WHERE status <> 'deleted' AND (created_at, id) < (%s, %s::uuid) "
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            (*before, limit),
        )

    async def user(self, user_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s::uuid AND status <> 'deleted'", (user_id,)
        )

    async def stop_containers(self, owner_id: str) -> list[dict[str, Any]]:
        """Set every container of the owner that should run to stopped; the ones changed, with their host."""
        return await self._db.fetch_all(
            "UPDATE containers SET desired_state = 'stopped', updated_at = now() "
            "WHERE owner_id = %s AND desired_state = 'running' RETURNING id, host_id",
            (owner_id,),
        )
