"""The SQL behind invoices: a tenant's draft refreshed from the rollups, finalization (and adjustments), and
the reads. Every write for one tenant and period holds an advisory lock on the pair (see
``shared.billing.invoices`` for the rules and the rounding)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import DictRow

from shared.billing.invoices import Line, Period, price_usage
from shared.billing.plan_store import PlanStore
from shared.db import Database

Connection = psycopg.AsyncConnection[DictRow]
_INVOICE_COLUMNS = (
    "id, owner_id, kind, period_start, period_end, plan, status, currency, total, created_at, updated_at, finalized_at"
)


class InvoiceStore:
    """Invoices and their lines; every write for one tenant and period holds an advisory lock on the pair."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._plans = PlanStore(database)

    @staticmethod
    async def _lock(conn: Connection, owner_id: str, period: Period) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"invoice:{owner_id}:{period.label}",))

    @staticmethod
    async def _quantities(conn: Connection, owner_id: str, period: Period) -> dict[str, Decimal]:
        cursor = await conn.execute(
            "SELECT meter, sum(quantity) AS quantity FROM usage_rollups "
            "WHERE owner_id = %s AND hour >= %s AND hour < %s GROUP BY meter",
            (owner_id, period.start, period.end),
        )
        return {row["meter"]: Decimal(row["quantity"]) for row in await cursor.fetchall()}

    @staticmethod
    async def _usage_invoice(conn: Connection, owner_id: str, period: Period) -> dict[str, Any] | None:
        cursor = await conn.execute(
            f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE owner_id = %s AND period_start = %s AND kind = 'usage'",
            (owner_id, period.start),
        )
        return await cursor.fetchone()

    @staticmethod
    async def _write_lines(conn: Connection, invoice_id: str, lines: list[Line]) -> int:
        for position, line in enumerate(lines):
            await conn.execute(
                "INSERT INTO invoice_lines (invoice_id, position, meter, quantity, unit, unit_price, price_unit, "
                "amount) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    invoice_id,
                    position,
                    line.meter,
                    line.quantity,
                    line.unit,
                    line.unit_price,
                    line.price_unit,
                    line.amount,
                ),
            )
        return sum(line.amount for line in lines)

    async def refresh_draft(self, owner_id: str, period: Period) -> str | None:
        """Rewrite the tenant's draft for ``period`` from the rollups now (creating it); its id, or the
        finalized invoice's when the period is finalized already (which is left as it is)."""
        plan, _ = await self._plans.account(owner_id)
        async with self._db.transaction() as conn:
            await self._lock(conn, owner_id, period)
            invoice = await self._usage_invoice(conn, owner_id, period)
            if invoice is not None and invoice["status"] == "finalized":
                return str(invoice["id"])
            lines = price_usage(await self._quantities(conn, owner_id, period), plan)
            if invoice is None:
                invoice_id = str(uuid.uuid4())
                await conn.execute(
                    "INSERT INTO invoices (id, owner_id, kind, period_start, period_end, plan, currency) "
                    "VALUES (%s, %s, 'usage', %s, %s, %s, %s)",
                    (invoice_id, owner_id, period.start, period.end, plan.name, plan.currency),
                )
            else:
                invoice_id = str(invoice["id"])
                await conn.execute("DELETE FROM invoice_lines WHERE invoice_id = %s", (invoice_id,))
            total = await self._write_lines(conn, invoice_id, lines)
            await conn.execute(
                "UPDATE invoices SET total = %s, plan = %s, currency = %s, updated_at = now() WHERE id = %s",
                (total, plan.name, plan.currency, invoice_id),
            )
            return invoice_id

    async def finalize(self, owner_id: str, period: Period) -> list[str]:
        """Finalize the tenant's usage invoice for ``period`` (or, when it is final already and usage grew
        since, write an adjustment invoice for the difference). The ids of the invoices finalized now."""
        plan, _ = await self._plans.account(owner_id)
        async with self._db.transaction() as conn:
            await self._lock(conn, owner_id, period)
            invoice = await self._usage_invoice(conn, owner_id, period)
            lines = price_usage(await self._quantities(conn, owner_id, period), plan)
            if invoice is None or invoice["status"] == "draft":
                if invoice is None:
                    invoice_id = str(uuid.uuid4())
                    await conn.execute(
                        "INSERT INTO invoices (id, owner_id, kind, period_start, period_end, plan, currency) "
                        "VALUES (%s, %s, 'usage', %s, %s, %s, %s)",
                        (invoice_id, owner_id, period.start, period.end, plan.name, plan.currency),
                    )
                else:
                    invoice_id = str(invoice["id"])
                    await conn.execute("DELETE FROM invoice_lines WHERE invoice_id = %s", (invoice_id,))
                total = await self._write_lines(conn, invoice_id, lines)
                await conn.execute(
                    "UPDATE invoices SET total = %s, plan = %s, currency = %s, status = 'finalized', "
                    "finalized_at = now(), updated_at = now() WHERE id = %s",
                    (total, plan.name, plan.currency, invoice_id),
                )
                return [invoice_id]
            adjustment = await self._adjustment_lines(conn, owner_id, period, lines)
            if not adjustment:
                return []
            invoice_id = str(uuid.uuid4())
            await conn.execute(
                "INSERT INTO invoices (id, owner_id, kind, period_start, period_end, plan, currency) "
                "VALUES (%s, %s, 'adjustment', %s, %s, %s, %s)",
                (invoice_id, owner_id, period.start, period.end, plan.name, invoice["currency"]),
            )
            total = await self._write_lines(conn, invoice_id, adjustment)
            await conn.execute(
                "UPDATE invoices SET total = %s, status = 'finalized', finalized_at = now(), updated_at = now() "
                "WHERE id = %s",
                (total, invoice_id),
            )
            return [invoice_id]

    @staticmethod
    async def _adjustment_lines(conn: Connection, owner_id: str, period: Period, now_lines: list[Line]) -> list[Line]:
        """Per meter, what the period's usage comes to now less what its finalized invoices billed."""
        cursor = await conn.execute(
            "SELECT l.meter, sum(l.quantity) AS quantity, sum(l.amount) AS amount FROM invoice_lines l "
            "JOIN invoices i ON i.id = l.invoice_id "
            "WHERE i.owner_id = %s AND i.period_start = %s AND i.status = 'finalized' GROUP BY l.meter",
            (owner_id, period.start),
        )
        billed = {row["meter"]: (Decimal(row["quantity"]), int(row["amount"])) for row in await cursor.fetchall()}
        lines = []
        for line in now_lines:
            quantity, amount = billed.pop(line.meter, (Decimal(0), 0))
            if line.quantity != quantity:
                lines.append(
                    Line(
                        line.meter,
                        line.quantity - quantity,
                        line.unit,
                        line.unit_price,
                        line.price_unit,
                        line.amount - amount,
                    )
                )
        return lines

    async def owners_to_finalize(self, period: Period) -> list[str]:
        """Tenants with usage in ``period`` or a usage invoice for it."""
        rows = await self._db.fetch_all(
            "SELECT DISTINCT owner_id FROM usage_rollups WHERE hour >= %s AND hour < %s "
            "UNION SELECT owner_id FROM invoices WHERE period_start = %s AND kind = 'usage'",
            (period.start, period.end, period.start),
        )
        return [str(row["owner_id"]) for row in rows]

    async def invoices(
        self, owner_id: str, limit: int, before: tuple[datetime, datetime, str] | None
    ) -> list[dict[str, Any]]:
        """The tenant's invoices, newest period first (then newest first), a page at a time."""
        if before is None:
            return await self._db.fetch_all(
                f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE owner_id = %s "
                "ORDER BY period_start DESC, created_at DESC, id DESC LIMIT %s",
                (owner_id, limit),
            )
        return await self._db.fetch_all(
            f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE owner_id = %s "
            "AND (period_start, created_at, id) < (%s, %s, %s::uuid) "
            "ORDER BY period_start DESC, created_at DESC, id DESC LIMIT %s",
            (owner_id, *before, limit),
        )

    async def invoice(self, owner_id: str, invoice_id: str) -> dict[str, Any] | None:
        """One of the tenant's invoices with its lines, or None (another tenant's is None too)."""
        row = await self._db.fetch_one(
            f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE id = %s AND owner_id = %s", (invoice_id, owner_id)
        )
        if row is None:
            return None
        return {**row, "lines": await self.lines(str(row["id"]))}

    async def lines(self, invoice_id: str) -> list[dict[str, Any]]:
        return await self._db.fetch_all(
            "SELECT meter, quantity, unit, unit_price, price_unit, amount FROM invoice_lines "
            "WHERE invoice_id = %s ORDER BY position",
            (invoice_id,),
        )


async def finalize_period(database: Database, period: Period) -> list[str]:
    """Finalize every tenant's invoice for ``period`` (adjustments for late usage); the ids written."""
    store = InvoiceStore(database)
    written: list[str] = []
    for owner_id in await store.owners_to_finalize(period):
        written += await store.finalize(owner_id, period)
    return written
