"""TLS certificates and which https listener presents which: data access, scoped to the owner. The private
key is stored sealed (the caller seals it); nothing here reads it back for the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import errors

from shared.db import Database

_COLUMNS = "id, owner_id, name, hostnames, subject, issuer, fingerprint_sha256, not_before, not_after, created_at"


class CertificateInUse(Exception):
    """A listener still presents the certificate."""


class CertificateStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, owner_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """Insert a checked certificate (``key_sealed`` already sealed)."""
        row = await self._db.fetch_one(
            "INSERT INTO certificates (owner_id, name, hostnames, chain_pem, key_sealed, subject, issuer, "
            "fingerprint_sha256, not_before, not_after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {_COLUMNS}",
            (
                owner_id,
                values["name"],
                list(values["hostnames"]),
                values["chain_pem"],
                values["key_sealed"],
                values["subject"],
                values["issuer"],
                values["fingerprint_sha256"],
                values["not_before"],
                values["not_after"],
            ),
        )
        assert row is not None
        return row

    async def get(self, owner_id: str, certificate_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM certificates WHERE id = %s AND owner_id = %s", (certificate_id, owner_id)
        )

    async def owned(self, owner_id: str, certificate_ids: list[str]) -> set[str]:
        """Which of ``certificate_ids`` belong to the owner."""
        rows = await self._db.fetch_all(
            "SELECT id FROM certificates WHERE owner_id = %s AND id = ANY(%s::uuid[])", (owner_id, certificate_ids)
        )
        return {str(row["id"]) for row in rows}

    async def page(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the (created_at, id) of the previous page's last row."""
        conditions = "owner_id = %s"
        params: list[Any] = [owner_id]
        if after is not None:
            conditions += " AND (created_at, id) < (%s, %s)"
            params.extend(after)
        return await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM certificates WHERE {conditions} ORDER BY created_at DESC, id DESC LIMIT %s",
            (*params, limit),
        )

    async def delete(self, owner_id: str, certificate_id: str) -> bool:
        """False when there is no such certificate; CertificateInUse while a listener presents it."""
        try:
            deleted = await self._db.fetch_one(
                "DELETE FROM certificates WHERE id = %s AND owner_id = %s RETURNING id", (certificate_id, owner_id)
            )
        except errors.ForeignKeyViolation as exc:
            raise CertificateInUse from exc
        return deleted is not None

    async def set_listener_certificates(self, listener_id: str, certificate_ids: list[str]) -> None:
        """Make the listener present exactly ``certificate_ids``, in that order (the first is the default)."""
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM listener_certificates WHERE listener_id = %s", (listener_id,))
            for position, certificate_id in enumerate(certificate_ids):
                await conn.execute(
                    "INSERT INTO listener_certificates (listener_id, certificate_id, position) VALUES (%s, %s, %s)",
                    (listener_id, certificate_id, position),
                )
            # lb-runtime notices listener changes by their updated_at.
            await conn.execute("UPDATE listeners SET updated_at = now() WHERE id = %s", (listener_id,))

    async def listener_certificates(self, listener_ids: list[str]) -> dict[str, list[str]]:
        """Each listener's certificate ids, in presentation order."""
        rows = await self._db.fetch_all(
            "SELECT listener_id, certificate_id FROM listener_certificates WHERE listener_id = ANY(%s::uuid[]) "
            "ORDER BY listener_id, position",
            (listener_ids,),
        )
        found: dict[str, list[str]] = {}
        for row in rows:
            found.setdefault(str(row["listener_id"]), []).append(str(row["certificate_id"]))
        return found
