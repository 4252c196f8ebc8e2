"""Account-level data access: status, password and email changes, the dev outbox, and everything a user owns.

Deleting an account reaches into the tables of the other functions (containers, images, listeners) on
purpose: it is the one operation that spans them all, and it does so through their own paths where one
exists (a container is deleted by setting its desired state and queueing its host's worker, exactly as
``DELETE /api/containers/{id}`` does; an image record goes with its deleted containers' tombstones and a
``image.delete`` job, as ``DELETE /api/images/{id}`` does). Every statement is idempotent, so a retried
deletion finishes what an interrupted one left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db import Database, Row


@dataclass(frozen=True)
class AccountRecord:
    id: str
    email: str
    role: str
    plan: str
    status: str
    created_at: datetime


_ACCOUNT_COLUMNS = "id, email, role, plan, status, created_at"


def _account(row: Row) -> AccountRecord:
    return AccountRecord(
        id=str(row["id"]),
        email=row["email"],
        role=row["role"],
        plan=row["plan"],
        status=row["status"],
        created_at=row["created_at"],
    )


class AccountStore:
    """SQL for account management over one connection pool."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def account(self, user_id: str) -> AccountRecord | None:
        """The user ``user_id`` whatever their status."""
        row = await self._db.fetch_one(f"SELECT {_ACCOUNT_COLUMNS} FROM users WHERE id = %s::uuid", (user_id,))
        return _account(row) if row else None

    async def account_by_email(self, email: str) -> AccountRecord | None:
        row = await self._db.fetch_one(f"SELECT {_ACCOUNT_COLUMNS} FROM users WHERE email = %s", (email,))
        return _account(row) if row else None

    async def page(self, limit: int, after: tuple[datetime, str] | None) -> list[AccountRecord]:
        """Every account but deleted ones, newest first; ``after`` is the previous page's last (created_at, id)."""
        if after is None:
            rows = await self._db.fetch_all(
                f"SELECT {_ACCOUNT_COLUMNS} FROM users WHERE status <> 'deleted' "
                "ORDER BY created_at DESC, id DESC LIMIT %s",
                (limit,),
            )
        else:
            rows = await self._db.fetch_all(
                f"SELECT {_ACCOUNT_COLUMNS} FROM users WHERE status <> 'deleted' "
                "AND (created_at, id) < (%s, %s::uuid) ORDER BY created_at DESC, id DESC LIMIT %s",
                (after[0], after[1], limit),
            )
        return [_account(row) for row in rows]

    async def set_role(self, email: str, role: str) -> AccountRecord | None:
        row = await self._db.fetch_one(
            f"UPDATE users SET role = %s, updated_at = now() WHERE email = %s AND status <> 'deleted' "
            f"RETURNING {_ACCOUNT_COLUMNS}",
            (role, email),
        )
        return _account(row) if row else None

    async def set_status(self, user_id: str, status: str) -> AccountRecord | None:
        """Disable or re-enable an account (never a deleted one); the account, or None."""
        row = await self._db.fetch_one(
            f"UPDATE users SET status = %s, updated_at = now() WHERE id = %s::uuid AND status <> 'deleted' "
            f"RETURNING {_ACCOUNT_COLUMNS}",
            (status, user_id),
        )
        return _account(row) if row else None

    async def password_hash(self, user_id: str) -> str | None:
        row = await self._db.fetch_one(
            "SELECT password_hash FROM users WHERE id = %s::uuid AND status = 'active'", (user_id,)
        )
        return str(row["password_hash"]) if row else None

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._db.execute(
            "UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s::uuid", (password_hash, user_id)
        )

    async def revoke_sessions(self, user_id: str, reason: str, keep_session_id: str | None = None) -> list[str]:
        """Revoke the user's live sessions (all but ``keep_session_id``); their ids."""
        rows = await self._db.fetch_all(
            "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = %s "
            "WHERE user_id = %s::uuid AND revoked_at IS NULL AND expires_at > now() "
            "AND id IS DISTINCT FROM %s::uuid RETURNING id",
            (reason, user_id, keep_session_id),
        )
        return [str(row["id"]) for row in rows]

    async def live_session_ids(self, user_id: str) -> list[str]:
        rows = await self._db.fetch_all(
            "SELECT id FROM auth_sessions WHERE user_id = %s::uuid AND revoked_at IS NULL AND expires_at > now()",
            (user_id,),
        )
        return [str(row["id"]) for row in rows]

    # --- email changes -----------------------------------------------------------------------------

    async def email_taken(self, email: str) -> bool:
        return await self._db.fetch_one("SELECT 1 AS taken FROM users WHERE email = %s", (email,)) is not None

    async def start_email_change(
        self, user_id: str, new_email: str, token_hash: bytes, ttl_seconds: int, outbox: tuple[str, str] | None
    ) -> datetime:
        """Record a pending change (older pending ones of the user stop counting); queue the mail in the dev
        outbox when ``outbox`` (subject, body) is given. Returns when the confirmation expires."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE email_changes SET used_at = now() WHERE user_id = %s::uuid AND used_at IS NULL", (user_id,)
            )
            cursor = await conn.execute(
                "INSERT INTO email_changes (token_hash, user_id, new_email, expires_at) "
                "VALUES (%s, %s::uuid, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
                (token_hash, user_id, new_email, ttl_seconds),
            )
            row = await cursor.fetchone()
            assert row is not None
            if outbox is not None:
                await conn.execute(
                    "INSERT INTO dev_outbox (recipient, subject, body) VALUES (%s, %s, %s)",
                    (new_email, outbox[0], outbox[1]),
                )
        expires: datetime = row["expires_at"]
        return expires

    async def confirm_email_change(self, token_hash: bytes) -> AccountRecord | str | None:
        """Apply the change the token stands for: the account, None for an unknown/used/expired token, or
        ``"taken"`` when the address was taken meanwhile."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE email_changes SET used_at = now() WHERE token_hash = %s AND used_at IS NULL "
                "AND expires_at > now() RETURNING user_id, new_email",
                (token_hash,),
            )
            change = await cursor.fetchone()
            if change is None:
                return None
            cursor = await conn.execute(
                "UPDATE users SET email = %s, updated_at = now() WHERE id = %s AND status = 'active' "
                "AND NOT EXISTS (SELECT 1 FROM users other WHERE other.email = %s) "
                f"RETURNING {_ACCOUNT_COLUMNS}",
                (change["new_email"], change["user_id"], change["new_email"]),
            )
            row = await cursor.fetchone()
        return _account(row) if row else "taken"

    # --- deletion ----------------------------------------------------------------------------------

    async def mark_deleted(self, user_id: str) -> bool:
        """Anonymise and mark the account deleted (the email is freed, the password stops working; the row
        stays for billing and audit records). True the first time, False when it already was."""
        changed = await self._db.execute(
            "UPDATE users SET status = 'deleted', deleted_at = now(), updated_at = now(), "
            "email = 'deleted-' || id::text || '@deleted.invalid', password_hash = '!' "
            "WHERE id = %s::uuid AND status <> 'deleted'",
            (user_id,),
        )
        return changed == 1

    async def delete_configuration(self, user_id: str) -> int:
        """Services first, so no rollout replaces the containers deleted next (their ``service_id`` empties),
        and alert rules and webhooks, so nothing fires at (or keeps the secret of) a deleted account."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM services WHERE owner_id = %s::uuid", (user_id,))
            await conn.execute("DELETE FROM alert_rules WHERE owner_id = %s::uuid", (user_id,))
            await conn.execute("DELETE FROM alert_webhooks WHERE owner_id = %s::uuid", (user_id,))
        return cursor.rowcount

    async def delete_listeners(self, user_id: str) -> int:
        """lb-runtime follows the listener table: a deleted row is an unbound port within its next snapshot.
        Their certificates go with them (nothing else may use a tenant's certificate)."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM listeners WHERE owner_id = %s::uuid", (user_id,))
            await conn.execute("DELETE FROM certificates WHERE owner_id = %s::uuid", (user_id,))
        return cursor.rowcount

    async def delete_containers(self, user_id: str) -> list[dict[str, Any]]:
        """Set every container's desired state to deleted; the (id, host_id) of those not deleted yet, whose
        host workers must be told (again, on a retry: their jobs are idempotent)."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE containers SET desired_state = 'deleted', reason = NULL, updated_at = now() "
                "WHERE owner_id = %s::uuid AND desired_state <> 'deleted'",
                (user_id,),
            )
            # Never placed on a host: no worker holds anything of it.
            await conn.execute(
                "UPDATE containers SET status = 'deleted', updated_at = now() "
                "WHERE owner_id = %s::uuid AND host_id IS NULL AND status <> 'deleted'",
                (user_id,),
            )
            cursor = await conn.execute(
                "SELECT id, host_id FROM containers WHERE owner_id = %s::uuid AND status <> 'deleted'", (user_id,)
            )
            rows = await cursor.fetchall()
        return [dict(row) for row in rows]

    async def delete_unused_images(self, user_id: str) -> list[dict[str, Any]]:
        """Remove the records of the user's images no live container uses (with their deleted containers'
        tombstones); what each image's cleanup job needs."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM containers c WHERE c.owner_id = %s::uuid AND c.status = 'deleted' AND NOT EXISTS "
                "(SELECT 1 FROM containers live WHERE live.image_id = c.image_id AND live.status <> 'deleted')",
                (user_id,),
            )
            cursor = await conn.execute(
                "DELETE FROM images i WHERE i.owner_id = %s::uuid AND NOT EXISTS "
                "(SELECT 1 FROM containers c WHERE c.image_id = i.id) "
                "RETURNING id, owner_id, object_key, docker_image_id, reference",
                (user_id,),
            )
            rows = await cursor.fetchall()
        return [dict(row) for row in rows]

    async def remaining(self, user_id: str) -> dict[str, int]:
        """What is left of a deleted account: containers not yet removed by their host, image records."""
        row = await self._db.fetch_one(
            "SELECT (SELECT count(*) FROM containers WHERE owner_id = %s::uuid AND status <> 'deleted') AS containers, "
            "(SELECT count(*) FROM images WHERE owner_id = %s::uuid) AS images",
            (user_id, user_id),
        )
        assert row is not None
        return {"containers": int(row["containers"]), "images": int(row["images"])}
