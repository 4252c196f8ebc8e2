"""The images function's data access. Every query is scoped to the owner: other tenants' rows don't exist."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from psycopg import errors
from psycopg.types.json import Jsonb

from shared.db import Database
from shared.errors import Conflict

_COLUMNS = (
    "id, owner_id, name, tag, status, reason, progress, object_key, upload_bytes, inspection, scan, "
    "optimization, created_at, updated_at"
)


class ImageStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, owner_id: str, name: str, tag: str, image_id: str, object_key: str) -> dict[str, Any] | None:
        """Insert a pending image; None when the owner already has ``name:tag``."""
        try:
            return await self._db.fetch_one(
                f"INSERT INTO images (id, owner_id, name, tag, object_key) VALUES (%s, %s, %s, %s, %s) "
                f"RETURNING {_COLUMNS}",
                (image_id, owner_id, name, tag, object_key),
            )
        except errors.UniqueViolation:
            return None

    async def get(self, owner_id: str, image_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM images WHERE id = %s AND owner_id = %s", (image_id, owner_id)
        )

    async def page(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the (created_at, id) of the last row of the previous page."""
        if after is None:
            return await self._db.fetch_all(
                f"SELECT {_COLUMNS} FROM images WHERE owner_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
                (owner_id, limit),
            )
        return await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM images WHERE owner_id = %s AND (created_at, id) < (%s, %s) "
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            (owner_id, after[0], after[1], limit),
        )

    async def mark_uploaded(self, owner_id: str, image_id: str, upload_bytes: int) -> dict[str, Any] | None:
        """pending_upload/uploaded/failed -> uploaded, queued for processing; None if in another state."""
        return await self._db.fetch_one(
            f"UPDATE images SET status = 'uploaded', upload_bytes = %s, reason = NULL, "
            "progress = %s, updated_at = now() "
            "WHERE id = %s AND owner_id = %s AND status IN ('pending_upload', 'uploaded', 'failed') "
            f"RETURNING {_COLUMNS}",
            (upload_bytes, Jsonb({"stage": "queued", "percent": 0}), image_id, owner_id),
        )

    async def containers_using(self, owner_id: str, image_id: str) -> list[str]:
        """The names of the owner's containers (not deleted) made from the image."""
        rows = await self._db.fetch_all(
            "SELECT name FROM containers WHERE image_id = %s AND owner_id = %s AND status <> 'deleted' ORDER BY name",
            (image_id, owner_id),
        )
        return [row["name"] for row in rows]

    async def delete(
        self,
        owner_id: str,
        image_id: str,
        before_commit: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> dict[str, Any] | None:
        """Remove the record; returns what the host cleanup needs, or None when there was none.

        Deleted containers' tombstones go with it; a live container made from it meanwhile -> Conflict.
        ``before_commit`` gets the removed row inside the transaction (to send the cleanup job): if it fails,
        or the process dies before the commit, the record stays."""
        try:
            async with self._db.transaction() as conn:
                await conn.execute(
                    "DELETE FROM containers WHERE image_id = %s AND owner_id = %s AND status = 'deleted'",
                    (image_id, owner_id),
                )
                cursor = await conn.execute(
                    "DELETE FROM images WHERE id = %s AND owner_id = %s "
                    "RETURNING id, owner_id, object_key, docker_image_id, reference",
                    (image_id, owner_id),
                )
                row = await cursor.fetchone()
                if row is not None and before_commit is not None:
                    await before_commit(row)
                return row
        except errors.ForeignKeyViolation as exc:
            raise Conflict("The image is used by a container; delete the container first.") from exc
