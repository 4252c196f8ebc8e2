"""Billing logic: the caller's usage, invoices and plan; admins' plan edits, plan changes, suspension and
finalization. No HTTP here."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from functions.billing.models import (
    AdminUsage,
    AdminUsageItem,
    CallerPlan,
    Finalized,
    Invoice,
    InvoiceLine,
    InvoicePage,
    PlanInfo,
    PlanList,
    PlanQuotas,
    QuotaUse,
    UpdatePlan,
    UpdateUser,
    UsageItem,
    UsageReport,
    UserBilling,
)
from functions.billing.store import BillingStore
from shared.billing.invoice_store import InvoiceStore, finalize_period
from shared.billing.invoices import Period, parse_period, period_containing, price_usage
from shared.billing.meters import METERS
from shared.billing.plan_store import Plan, PlanStore
from shared.db import Database
from shared.errors import BadRequest, NotFound, ValidationFailed
from shared.instants import parse_date, parse_date_time
from shared.jobs import HostJobQueues, Job, JobKind
from shared.pagination import decode_cursor, encode_cursor, page_of, parse_id

MAX_USAGE_RANGE = timedelta(days=366)
INVOICE_CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9]{1,16}\.[0-9a-f]{32}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def parse_moment(text: str, field: str) -> datetime:
    """An RFC 3339 date-time or a YYYY-MM-DD date (midnight UTC), exactly as shared.instants reads them; 422
    otherwise."""
    moment = parse_date_time(text) or parse_date(text)
    if moment is None:
        raise ValidationFailed(
            f"{field}: {text[:60]!r} is not an RFC 3339 date-time or a YYYY-MM-DD date.",
            details=[{"field": field, "message": "an RFC 3339 date-time or a YYYY-MM-DD date"}],
        )
    return moment


def _quantity(value: Any) -> float:
    return float(round(Decimal(value), 6))


async def usage(
    billing: BillingStore, owner_id: str, start_text: str | None, end_text: str | None, group_by: str
) -> UsageReport:
    """The caller's usage in [from, to) (default: this billing period so far), from the hourly rollups: an
    hour counts when it starts inside the range."""
    now = datetime.now(UTC)
    start = parse_moment(start_text, "from") if start_text is not None else period_containing(now).start
    end = parse_moment(end_text, "to") if end_text is not None else now
    if end <= start:
        raise ValidationFailed("to must be after from.", details=[{"field": "to", "message": "after from"}])
    if end - start > MAX_USAGE_RANGE:
        raise ValidationFailed("Ask for at most 366 days at a time.", details=[{"field": "from", "message": "range"}])
    rows = await billing.usage(owner_id, start, end, group_by)
    items = [
        UsageItem(
            meter=row["meter"],
            quantity=_quantity(row["quantity"]),
            unit=METERS[row["meter"]].unit if row["meter"] in METERS else "",
            service=(row["service"] or None) if group_by == "service" else None,
            day=row["day"],
        )
        for row in rows
    ]
    return UsageReport(start=start, end=end, group_by=group_by, items=items)  # type: ignore[arg-type]


def usage_csv(report: UsageReport) -> str:
    """The report as CSV: meter, the grouping's column (service or day) when there is one, quantity, unit."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    extra = [report.group_by] if report.group_by != "meter" else []
    writer.writerow(["meter", *extra, "quantity", "unit"])
    for item in report.items:
        group = [item.service or "" if report.group_by == "service" else item.day or ""] if extra else []
        # Neutralise spreadsheet formulas in tenant-chosen names (service names are [a-z0-9-] anyway).
        group = ["'" + value if value[:1] in ("=", "+", "-", "@") else value for value in group]
        writer.writerow([item.meter, *group, f"{item.quantity:f}".rstrip("0").rstrip("."), item.unit])
    return out.getvalue()


def _invoice(row: dict[str, Any], lines: list[dict[str, Any]]) -> Invoice:
    return Invoice(
        id=str(row["id"]),
        kind=row["kind"],
        period=f"{row['period_start'].astimezone(UTC):%Y-%m}",
        period_start=row["period_start"],
        period_end=row["period_end"],
        plan=row["plan"],
        status=row["status"],
        currency=row["currency"],
        total=int(row["total"]),
        lines=[
            InvoiceLine(
                meter=line["meter"],
                quantity=_quantity(line["quantity"]),
                unit=line["unit"],
                unit_price=str(Decimal(line["unit_price"]).normalize()),
                price_unit=line["price_unit"],
                amount=int(line["amount"]),
            )
            for line in lines
        ],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finalized_at=row["finalized_at"],
    )


def _encode_invoice_cursor(row: dict[str, Any]) -> str:
    period = (row["period_start"] - _EPOCH) // _MICRO
    return f"{period}.{encode_cursor(row)}"


def _decode_invoice_cursor(cursor: str) -> tuple[datetime, datetime, str]:
    if not re.fullmatch(INVOICE_CURSOR_PATTERN, cursor):
        raise BadRequest("The cursor is not one this API gave out; start again without it.")
    period, _, rest = cursor.partition(".")
    created_at, row_id = decode_cursor(rest)
    return _EPOCH + int(period) * _MICRO, created_at, row_id


async def list_invoices(invoices: InvoiceStore, owner_id: str, limit: int, cursor: str | None) -> InvoicePage:
    """The caller's invoices, newest period first; the open period's draft is refreshed first."""
    before = _decode_invoice_cursor(cursor) if cursor is not None else None
    if before is None:
        await invoices.refresh_draft(owner_id, period_containing(datetime.now(UTC)))
    rows = await invoices.invoices(owner_id, limit + 1, before)
    page, next_cursor = page_of(rows, limit, lambda row: row, _encode_invoice_cursor)
    return InvoicePage(
        items=[_invoice(row, await invoices.lines(str(row["id"]))) for row in page], next_cursor=next_cursor
    )


async def get_invoice(invoices: InvoiceStore, owner_id: str, invoice_id: str) -> Invoice:
    """One of the caller's invoices (a draft is refreshed before it is answered); 404 for anyone else's."""
    found = await invoices.invoice(owner_id, parse_id(invoice_id))
    if found is None:
        raise NotFound(f"No invoice {invoice_id}.")
    if found["status"] == "draft":
        await invoices.refresh_draft(owner_id, Period(found["period_start"], found["period_end"]))
        found = await invoices.invoice(owner_id, str(found["id"]))
        assert found is not None
    return _invoice(found, found["lines"])


def plan_info(plan: Plan) -> PlanInfo:
    return PlanInfo(
        name=plan.name,
        currency=plan.currency,
        api_requests_per_minute=plan.api_requests_per_minute,
        quotas=PlanQuotas(
            max_containers=plan.max_containers,
            max_memory_mb_per_container=plan.max_memory_mb_per_container,
            max_memory_mb_total=plan.max_memory_mb_total,
            max_listeners=plan.max_listeners,
            max_image_storage_mb=plan.max_image_storage_mb,
        ),
        unit_prices={meter: str(plan.price(meter).normalize()) for meter in METERS},
        price_units={meter: METERS[meter].price_unit for meter in METERS},
    )


async def caller_plan(plans: PlanStore, owner_id: str) -> CallerPlan:
    """The caller's plan (from the database, not the token), its quotas and what the caller holds now."""
    plan, suspended = await plans.account(owner_id)
    use = await plans.usage(owner_id)
    return CallerPlan(
        plan=plan_info(plan),
        usage=QuotaUse(
            containers=use.containers,
            memory_mb_total=use.memory_mb_total,
            listeners=use.listeners,
            image_storage_mb=use.image_storage_mb,
        ),
        suspended=suspended,
    )


async def list_plans(plans: PlanStore) -> PlanList:
    return PlanList(items=[plan_info(plan) for plan in await plans.plans()])


async def update_plan(plans: PlanStore, name: str, body: UpdatePlan) -> PlanInfo:
    """An admin's change to a plan's quotas or prices; it applies to every user of the plan at once."""
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise ValidationFailed("Name at least one field to change.", details=[{"field": "body", "message": "empty"}])
    return plan_info(await plans.update_plan(name, changes))


def _user_billing(row: dict[str, Any], stopped: int = 0) -> UserBilling:
    return UserBilling(
        id=str(row["id"]),
        email=row["email"],
        plan=row["plan"],
        suspended=row["suspended_at"] is not None,
        suspended_at=row["suspended_at"],
        suspended_reason=row["suspended_reason"],
        stopped_containers=stopped,
    )


async def update_user(
    billing: BillingStore, plans: PlanStore, queue: HostJobQueues, user_id: str, body: UpdateUser
) -> UserBilling:
    """Change a user's plan (its quotas apply at once) and/or suspend them (their containers are stopped,
    their data stays) or lift the suspension (nothing restarts by itself)."""
    user_id = parse_id(user_id)
    if await billing.user(user_id) is None:
        raise NotFound(f"No user {user_id}.")
    if body.plan is not None:
        if await plans.plan(body.plan) is None:
            raise ValidationFailed(f"No plan {body.plan}.", details=[{"field": "plan", "message": "unknown plan"}])
        await plans.set_user_plan(user_id, body.plan)
    stopped = 0
    if body.suspended is not None:
        await plans.set_suspended(user_id, body.suspended, body.reason if body.suspended else None)
        if body.suspended:
            changed = await billing.stop_containers(user_id)
            for container in changed:
                if container["host_id"] is not None:
                    job = Job(JobKind.RECONCILE_CONTAINER, {"container_id": str(container["id"])})
                    await queue.send(container["host_id"], job)
            stopped = len(changed)
    row = await billing.user(user_id)
    assert row is not None
    return _user_billing(row, stopped)


async def admin_usage(
    billing: BillingStore, plans: PlanStore, period_label: str | None, limit: int, cursor: str | None
) -> AdminUsage:
    """Every account with its plan, suspension, this period's usage by meter and what its draft comes to."""
    try:
        period = parse_period(period_label) if period_label else period_containing(datetime.now(UTC))
    except ValueError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "period", "message": "YYYY-MM"}]) from exc
    rows = await billing.users(limit + 1, decode_cursor(cursor) if cursor is not None else None)
    page, next_cursor = page_of(rows, limit, lambda row: row)
    quantities: dict[str, dict[str, Decimal]] = {}
    for row in await billing.period_quantities([str(row["id"]) for row in page], period.start, period.end):
        quantities.setdefault(str(row["owner_id"]), {})[row["meter"]] = Decimal(row["quantity"])
    catalogue = {plan.name: plan for plan in await plans.plans()}
    items = []
    for row in page:
        used = quantities.get(str(row["id"]), {})
        lines = price_usage(used, catalogue[row["plan"]])
        items.append(
            AdminUsageItem(
                id=str(row["id"]),
                email=row["email"],
                plan=row["plan"],
                suspended=row["suspended_at"] is not None,
                usage={meter: _quantity(value) for meter, value in used.items()},
                draft_total=sum(line.amount for line in lines),
            )
        )
    return AdminUsage(period=period.label, items=items, next_cursor=next_cursor)


async def finalize(database: Database, period_label: str) -> Finalized:
    """Finalize every tenant's invoice of a period now (adjustment invoices for usage added since)."""
    try:
        period = parse_period(period_label)
    except ValueError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "period", "message": "YYYY-MM"}]) from exc
    return Finalized(period=period.label, invoice_ids=await finalize_period(database, period))
