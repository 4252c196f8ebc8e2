"""Personal access tokens' rows: what makes a verified token usable right now, and where it was last used.

A personal access token is an RS256 JWT (see ``shared.tokens.issue_personal_access_token``), so every
authorizer (API Gateway's JWT authorizer, the local gateway's, a function's own verifier) checks its
signature and expiry like any access token. What a signature cannot say, its row does, and
``shared.identity`` reads it on every request that carries one: revoked or expired -> 401 at once, the
owner disabled or deleted -> 401. Only a SHA-256 of the token is stored (the token is 256+ bits of
signature: nothing to brute-force), and its last use (time, client address) is written at most once a
minute per token and address, so a busy script costs one UPDATE a minute, not one per request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db import Database, Row

# A token's use is recorded again only when this much time passed or the address changed.
LAST_USED_RESOLUTION_SECONDS = 60
SCOPES = ("read", "deploy")


def hash_api_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class ApiTokenRecord:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    last_used_ip: str | None


@dataclass(frozen=True)
class TokenUse:
    """What presenting token ``id`` is allowed right now."""

    usable: bool
    reason: str  # "ok", "unknown", "revoked", "expired", "account_inactive"
    scopes: tuple[str, ...] = ()
    role: str = "user"


_COLUMNS = "id, name, scopes, created_at, expires_at, revoked_at, last_used_at, last_used_ip"


def _record(row: Row) -> ApiTokenRecord:
    return ApiTokenRecord(
        id=str(row["id"]),
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        last_used_ip=row["last_used_ip"],
    )


class ApiTokenStore:
    """SQL for personal access tokens over one connection pool."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self,
        token_id: str,
        user_id: str,
        name: str,
        scopes: list[str],
        token_hash: bytes,
        kid: str,
        expires_at: datetime,
    ) -> ApiTokenRecord | None:
        """Store a new token; None when the user already has a live token of that name."""
        row = await self._db.fetch_one(
            "INSERT INTO api_tokens (id, user_id, name, scopes, token_hash, kid, expires_at) "
            "VALUES (%s::uuid, %s::uuid, %s, %s, %s, %s, %s) "
            "ON CONFLICT (user_id, name) WHERE revoked_at IS NULL DO NOTHING "
            f"RETURNING {_COLUMNS}",
            (token_id, user_id, name, scopes, token_hash, kid, expires_at),
        )
        return _record(row) if row else None

    async def list_live(self, user_id: str) -> list[ApiTokenRecord]:
        """The user's tokens that are neither revoked nor expired, newest first."""
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE user_id = %s::uuid AND revoked_at IS NULL "
            "AND expires_at > now() ORDER BY created_at DESC, id DESC",
            (user_id,),
        )
        return [_record(row) for row in rows]

    async def revoke(self, user_id: str, token_id: str) -> bool:
        """Revoke one of the user's tokens; False when there is no such live token."""
        changed = await self._db.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s::uuid AND user_id = %s::uuid "
            "AND revoked_at IS NULL",
            (token_id, user_id),
        )
        return changed == 1

    async def revoke_all(self, user_id: str) -> int:
        """Revoke every live token of the user; how many were."""
        return await self._db.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE user_id = %s::uuid AND revoked_at IS NULL", (user_id,)
        )

    async def check_use(self, token_id: str, user_id: str, client_ip: str | None) -> TokenUse:
        """Whether token ``token_id`` of ``user_id`` may be used now; records the use when it may."""
        row = await self._db.fetch_one(
            "SELECT t.scopes, t.revoked_at, t.expires_at <= now() AS expired, u.status, u.role, "
            "t.last_used_ip, (t.last_used_at IS NULL OR t.last_used_at < now() - make_interval(secs => %s)) "
            "AS stale FROM api_tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.id = %s::uuid AND t.user_id = %s::uuid",
            (LAST_USED_RESOLUTION_SECONDS, token_id, user_id),
        )
        if row is None:
            return TokenUse(False, "unknown")
        if row["revoked_at"] is not None:
            return TokenUse(False, "revoked")
        if row["expired"]:
            return TokenUse(False, "expired")
        if row["status"] != "active":
            return TokenUse(False, "account_inactive")
        if row["stale"] or (client_ip is not None and row["last_used_ip"] != client_ip):
            await self._db.execute(
                "UPDATE api_tokens SET last_used_at = now(), last_used_ip = %s WHERE id = %s::uuid",
                (client_ip, token_id),
            )
        return TokenUse(True, "ok", tuple(row["scopes"]), str(row["role"]))

    async def live_kids(self) -> list[str]:
        """Signing keys that made tokens still live: they stay published until those tokens expire."""
        rows = await self._db.fetch_all(
            "SELECT DISTINCT kid FROM api_tokens WHERE revoked_at IS NULL AND expires_at > now()"
        )
        return sorted(str(row["kid"]) for row in rows)


def as_dict(record: ApiTokenRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "scopes": list(record.scopes),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "last_used_at": record.last_used_at,
        "last_used_ip": record.last_used_ip,
    }
