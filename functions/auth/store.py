"""The auth function's data access: users, sessions, refresh tokens and signing keys in PostgreSQL.

Every method is one transaction. Invariants that concurrent requests could break live in SQL: an email
is taken once (unique constraint + ON CONFLICT), a refresh token is used once (conditional UPDATE), the
first signing key is created once and rotations are serialised (advisory lock).

Signing keys follow publish-before-use: a key is published from its insertion, signs from ``activates_at``
(the newest key whose ``activates_at`` has passed signs) and is superseded (``retired_at``) when a newer
key activates; ``retired_at`` may therefore lie in the future.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from shared.config import FunctionSettings
from shared.db import Database, Row, get_database

# Serialises creating and rotating signing keys across every instance of the function.
SIGNING_KEYS_LOCK_ID = 0x6265727468_01  # "berth" + 1


@dataclass(frozen=True)
class UserRecord:
    id: str
    email: str
    role: str
    plan: str
    password_hash: str


@dataclass(frozen=True)
class SigningKeyRecord:
    kid: str
    private_key_encrypted: bytes
    public_jwk: dict[str, Any]
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True)
class ActiveSigningKey:
    """The key that signs now, and in how many seconds the next pending key activates (None: none pending)."""

    record: SigningKeyRecord
    next_activation_in: float | None


class RotationStatus(enum.Enum):
    ROTATED = "rotated"
    REUSED = "reused"
    INVALID = "invalid"


@dataclass(frozen=True)
class RefreshRotation:
    """What presenting a refresh token did: rotated it, caught a reuse (session revoked), or nothing."""

    status: RotationStatus
    session_id: str | None = None
    user: UserRecord | None = None


def _user(row: Row) -> UserRecord:
    return UserRecord(
        id=str(row["id"]), email=row["email"], role=row["role"], plan=row["plan"], password_hash=row["password_hash"]
    )


def _signing_key(row: Row) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=row["kid"],
        private_key_encrypted=bytes(row["private_key_encrypted"]),
        public_jwk=dict(row["public_jwk"]),
        created_at=row["created_at"],
        activates_at=row["activates_at"],
        retired_at=row["retired_at"],
    )


def _active(row: Row) -> ActiveSigningKey:
    next_in = row["next_activation_in"]
    return ActiveSigningKey(_signing_key(row), None if next_in is None else float(next_in))


async def _one(conn: AsyncConnection[Any], query: str, params: tuple[Any, ...] = ()) -> Row | None:
    # The pool's connections use psycopg's dict_row factory (shared.db).
    cursor = await conn.execute(query, params)
    return cast(Row | None, await cursor.fetchone())


async def _all(conn: AsyncConnection[Any], query: str, params: tuple[Any, ...] = ()) -> list[Row]:
    cursor = await conn.execute(query, params)
    return cast(list[Row], await cursor.fetchall())


_KEY_COLUMNS = "kid, private_key_encrypted, public_jwk, created_at, activates_at, retired_at"
# The signing key: the newest whose activation time has passed. Newest by creation, not by activation: a
# key added later with a shorter delay supersedes a pending one, which then never signs. The clock, not
# now() (the transaction's start): after waiting for the keys lock, a key made meanwhile counts.
_ACTIVE_KEY_QUERY = (
    f"SELECT {_KEY_COLUMNS}, "
    "(SELECT EXTRACT(EPOCH FROM min(pending.activates_at) - clock_timestamp())::float8 "
    "FROM signing_keys pending WHERE pending.activates_at > clock_timestamp()) AS next_activation_in "
    "FROM signing_keys WHERE activates_at <= clock_timestamp() ORDER BY created_at DESC, kid DESC LIMIT 1"
)


# Keys that signed personal access tokens still live: published (and kept) until those tokens expire.
_LIVE_TOKEN_KIDS = "SELECT kid FROM api_tokens WHERE revoked_at IS NULL AND expires_at > now()"  # noqa: S105


class AuthStore:
    """SQL for users, sessions, refresh tokens and signing keys over one connection pool."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # --- users -------------------------------------------------------------------------------------

    async def create_user(self, email: str, password_hash: str) -> UserRecord | None:
        """Insert a user; None when the email is already taken."""
        row = await self._db.fetch_one(
            "INSERT INTO users (email, password_hash) VALUES (%s, %s) "
            "ON CONFLICT (email) DO NOTHING RETURNING id, email, role, plan, password_hash",
            (email, password_hash),
        )
        return _user(row) if row else None

    async def user_by_email(self, email: str) -> UserRecord | None:
        """The active user with this (normalised) email, if any (disabled and deleted ones cannot sign in)."""
        row = await self._db.fetch_one(
            "SELECT id, email, role, plan, password_hash FROM users WHERE email = %s AND status = 'active'", (email,)
        )
        return _user(row) if row else None

    async def user_by_id(self, user_id: str) -> UserRecord | None:
        """The user with this id, if any."""
        row = await self._db.fetch_one(
            "SELECT id, email, role, plan, password_hash FROM users WHERE id = %s::uuid", (user_id,)
        )
        return _user(row) if row else None

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        """Swap the hash for a rehashed one, unless the password changed meanwhile; True if swapped."""
        changed = await self._db.execute(
            "UPDATE users SET password_hash = %s WHERE id = %s::uuid AND password_hash = %s",
            (new_hash, user_id, old_hash),
        )
        return changed == 1

    # --- sessions and refresh tokens ---------------------------------------------------------------

    async def open_session(self, user_id: str, refresh_token_hash: bytes, ttl_seconds: int) -> str:
        """Start a session lasting ``ttl_seconds`` with its first refresh token; returns the session id."""
        async with self._db.transaction() as conn:
            session = await _one(
                conn,
                "INSERT INTO auth_sessions (user_id, expires_at) "
                "VALUES (%s::uuid, now() + make_interval(secs => %s)) "
                "RETURNING id, expires_at",
                (user_id, ttl_seconds),
            )
            assert session is not None
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (%s, %s, %s)",
                (refresh_token_hash, session["id"], session["expires_at"]),
            )
        return str(session["id"])

    async def rotate_refresh_token(self, presented_hash: bytes, replacement_hash: bytes) -> RefreshRotation:
        """Use the presented refresh token once and store its replacement; a second use revokes the session.

        The conditional UPDATE (``used_at IS NULL``) is what makes two concurrent refreshes with the
        same token safe: the row lock lets one of them mark the token used, and the other then sees it
        as used, i.e. a reuse.
        """
        async with self._db.transaction() as conn:
            used = await _one(
                conn,
                "UPDATE refresh_tokens t SET used_at = now() FROM auth_sessions s "
                "WHERE t.token_hash = %s AND t.used_at IS NULL AND t.expires_at > now() "
                "AND s.id = t.session_id AND s.revoked_at IS NULL AND s.expires_at > now() "
                "AND EXISTS (SELECT 1 FROM users u WHERE u.id = s.user_id AND u.status = 'active') "
                "RETURNING t.session_id, s.user_id, s.expires_at",
                (presented_hash,),
            )
            if used is None:
                return await self._handle_unusable_token(conn, presented_hash)
            user = await _one(
                conn, "SELECT id, email, role, plan, password_hash FROM users WHERE id = %s", (used["user_id"],)
            )
            assert user is not None  # the session references the user (ON DELETE CASCADE)
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (%s, %s, %s)",
                (replacement_hash, used["session_id"], used["expires_at"]),
            )
        return RefreshRotation(RotationStatus.ROTATED, str(used["session_id"]), _user(user))

    async def _handle_unusable_token(self, conn: AsyncConnection[Any], presented_hash: bytes) -> RefreshRotation:
        # Only a token that was used before counts as reused; an expired one or one of a revoked
        # session is merely invalid (and stays unused, so presenting it again says the same).
        reused = await _one(
            conn,
            "SELECT session_id FROM refresh_tokens WHERE token_hash = %s AND used_at IS NOT NULL",
            (presented_hash,),
        )
        if reused is None:
            return RefreshRotation(RotationStatus.INVALID)
        await conn.execute(
            "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'refresh_token_reused' "
            "WHERE id = %s AND revoked_at IS NULL",
            (reused["session_id"],),
        )
        return RefreshRotation(RotationStatus.REUSED, str(reused["session_id"]))

    async def revoke_session(self, session_id: str, reason: str) -> bool:
        """Mark the session revoked (its refresh tokens stop working); False if it already was."""
        changed = await self._db.execute(
            "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = %s "
            "WHERE id = %s::uuid AND revoked_at IS NULL",
            (reason, session_id),
        )
        return changed == 1

    # --- signing keys ------------------------------------------------------------------------------

    async def active_signing_key(self) -> ActiveSigningKey | None:
        """The key that signs now (the newest whose ``activates_at`` has passed), None before the first."""
        row = await self._db.fetch_one(_ACTIVE_KEY_QUERY)
        return _active(row) if row else None

    async def signing_key(self, kid: str) -> SigningKeyRecord | None:
        """The stored key ``kid``, whatever its state."""
        row = await self._db.fetch_one(f"SELECT {_KEY_COLUMNS} FROM signing_keys WHERE kid = %s", (kid,))
        return _signing_key(row) if row else None

    async def create_first_signing_key(
        self, kid: str, private_key_encrypted: bytes, public_jwk: dict[str, Any]
    ) -> ActiveSigningKey:
        """Insert this key, signing at once, unless another instance already made one; returns the active key."""
        async with self._db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SIGNING_KEYS_LOCK_ID,))
            row = await _one(conn, _ACTIVE_KEY_QUERY)
            if row is not None:
                return _active(row)
            # Any key still pending is older than this one, so it will never sign: nothing activates next.
            return ActiveSigningKey(await self._insert_key(conn, kid, private_key_encrypted, public_jwk, 0), None)

    async def add_signing_key(
        self,
        kid: str,
        private_key_encrypted: bytes,
        public_jwk: dict[str, Any],
        retired_lifetime_seconds: int,
        activation_delay_seconds: float,
    ) -> tuple[SigningKeyRecord, list[str]]:
        """Publish this key now and make it sign after ``activation_delay_seconds`` (at once if no key signs
        yet), superseding the others from then; prune long-retired keys. Returns the key and pruned kids."""
        async with self._db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SIGNING_KEYS_LOCK_ID,))
            if await _one(conn, _ACTIVE_KEY_QUERY) is None:
                activation_delay_seconds = 0  # nothing signs yet: nothing to wait for
            record = await self._insert_key(conn, kid, private_key_encrypted, public_jwk, activation_delay_seconds)
            return record, await self._delete_retired_keys(conn, retired_lifetime_seconds)

    async def _insert_key(
        self,
        conn: AsyncConnection[Any],
        kid: str,
        private_key_encrypted: bytes,
        public_jwk: dict[str, Any],
        activation_delay_seconds: float,
    ) -> SigningKeyRecord:
        # Caller holds the lock. The clock is read after taking it (now() is the transaction's start), so
        # keys' creation order is the order of rotations. Every other key stops signing when this one
        # starts: one not superseded yet, or superseded later (a pending rotation), is superseded then.
        row = await _one(
            conn,
            "INSERT INTO signing_keys (kid, private_key_encrypted, public_jwk, created_at, activates_at) "
            "SELECT %s, %s, %s, clock.at, clock.at + make_interval(secs => %s) "
            f"FROM (SELECT clock_timestamp() AS at) AS clock RETURNING {_KEY_COLUMNS}",
            (kid, private_key_encrypted, Jsonb(public_jwk), activation_delay_seconds),
        )
        assert row is not None
        record = _signing_key(row)
        await conn.execute(
            "UPDATE signing_keys SET retired_at = %s WHERE kid <> %s AND (retired_at IS NULL OR retired_at > %s)",
            (record.activates_at, kid, record.activates_at),
        )
        return record

    async def prune_signing_keys(self, retired_lifetime_seconds: int) -> list[str]:
        """Delete keys retired more than ``retired_lifetime_seconds`` ago; returns their kids."""
        async with self._db.transaction() as conn:
            return await self._delete_retired_keys(conn, retired_lifetime_seconds)

    async def _delete_retired_keys(self, conn: AsyncConnection[Any], retired_lifetime_seconds: int) -> list[str]:
        # retired_at is when a newer key started signing: its tokens are live for a lifetime after that.
        rows = await _all(
            conn,
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL "
            "AND retired_at < now() - make_interval(secs => %s) "
            f"AND kid NOT IN ({_LIVE_TOKEN_KIDS}) RETURNING kid",
            (retired_lifetime_seconds,),
        )
        return sorted(str(row["kid"]) for row in rows)

    async def published_signing_keys(self, retired_lifetime_seconds: int) -> list[SigningKeyRecord]:
        """Keys whose tokens may be live or soon will be: pending, signing and recently superseded, newest
        first. A key is published from its insertion, before it signs."""
        rows = await self._db.fetch_all(
            f"SELECT {_KEY_COLUMNS} FROM signing_keys "
            "WHERE retired_at IS NULL "
            "OR retired_at >= now() - make_interval(secs => %s) "
            f"OR kid IN ({_LIVE_TOKEN_KIDS}) "
            "ORDER BY created_at DESC, kid DESC",
            (retired_lifetime_seconds,),
        )
        return [_signing_key(row) for row in rows]


def get_auth_store(settings: FunctionSettings) -> AuthStore:
    """The store over the process's pool for ``settings.database_url`` (pools are cached per loop)."""
    return AuthStore(get_database(settings.database_url, settings.database_pool_max))
