"""The worker's SQL for image processing: conditional state changes, so redelivered jobs do no harm."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from shared.db import Database
from worker.container_runtime import image_repository

_IMAGE = "id, owner_id, name, tag, status, object_key, docker_image_id, reference"


class WorkerImageStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def claim(self, image_id: str) -> dict[str, Any] | None:
        """uploaded/processing -> processing; None when the image is gone or already finished."""
        return await self._db.fetch_one(
            "UPDATE images SET status = 'processing', updated_at = now(), progress = %s "
            "WHERE id = %s AND status IN ('uploaded', 'processing') "
            f"RETURNING {_IMAGE}",
            (Jsonb({"stage": "downloading", "percent": 5}), image_id),
        )

    async def progress(self, image_id: str, stage: str, percent: int) -> None:
        await self._db.execute(
            "UPDATE images SET progress = %s, updated_at = now() WHERE id = %s AND status = 'processing'",
            (Jsonb({"stage": stage, "percent": percent}), image_id),
        )

    async def finish(
        self, image_id: str, status: str, *, reason: str | None = None, fields: dict[str, Any] | None = None
    ) -> bool:
        """processing -> ``status`` with the reports; False when the image was deleted meanwhile."""
        fields = fields or {}
        finished = await self._db.fetch_one(
            "UPDATE images SET status = %s, reason = %s, progress = NULL, updated_at = now(), "
            "docker_image_id = %s, reference = %s, inspection = %s, scan = %s, optimization = %s "
            "WHERE id = %s AND status = 'processing' RETURNING id",
            (
                status,
                reason,
                fields.get("docker_image_id"),
                fields.get("reference"),
                _json(fields.get("inspection")),
                _json(fields.get("scan")),
                _json(fields.get("optimization")),
                image_id,
            ),
        )
        return finished is not None

    async def fail(self, image_id: str, reason: str) -> None:
        """Any unfinished state -> failed (the job gave up after its tries)."""
        await self._db.execute(
            "UPDATE images SET status = 'failed', reason = %s, progress = NULL, updated_at = now() "
            "WHERE id = %s AND status IN ('uploaded', 'processing')",
            (reason, image_id),
        )

    async def exists(self, image_id: str) -> bool:
        """Whether the image's record is there (in any state)."""
        return await self._db.fetch_one("SELECT 1 AS found FROM images WHERE id = %s", (image_id,)) is not None

    async def orphaned(self, references: list[str]) -> list[str]:
        """Which of ``references`` (``berth/<owner>/<name>:<tag>``) belong to a user of this platform but
        to none of their images any more. References of owners unknown here are not ours to judge."""
        owners: dict[str, list[str]] = {}
        for reference in references:
            parts = reference.split("/", 2)
            if len(parts) == 3:
                owners.setdefault(parts[1], []).append(reference)
        if not owners:
            return []
        # Every record counts, in any state: an image being processed is tagged before it is ready.
        rows = await self._db.fetch_all(
            "SELECT u.id::text AS owner, i.name, i.tag FROM users u "
            "LEFT JOIN images i ON i.owner_id = u.id WHERE u.id::text = ANY(%s)",
            (list(owners),),
        )
        known_owners = {row["owner"] for row in rows}
        live = {f"{image_repository(row['owner'], row['name'])}:{row['tag']}" for row in rows if row["name"]}
        return [ref for owner in known_owners for ref in owners[owner] if ref not in live]


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)
