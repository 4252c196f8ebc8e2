"""The billing function: the caller's usage, invoices and plan (/api/billing/*), and admins' plans, plan
changes, suspension, usage overview and finalization (billing's /api/admin/* routes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from functions.billing import service
from functions.billing.deps import Billing, Invoices, Plans, Queue
from functions.billing.models import (
    PERIOD_PATTERN,
    PLAN_NAME_PATTERN,
    AdminUsage,
    CallerPlan,
    Finalized,
    FinalizeRequest,
    GroupBy,
    Invoice,
    InvoicePage,
    PlanInfo,
    PlanList,
    UpdatePlan,
    UpdateUser,
    UsageReport,
    UserBilling,
)
from shared.config import get_function_settings
from shared.db import get_database
from shared.http_app import create_app, lambda_handler
from shared.identity import AdminUser, CurrentUser
from shared.pagination import KEYSET_CURSOR_PATTERN

router = APIRouter(prefix="/api/billing", tags=["billing"])
admin = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/usage", response_model=UsageReport, response_model_by_alias=True)
async def usage(
    request: Request,
    user: CurrentUser,
    billing: Billing,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    group_by: GroupBy = "meter",
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> UsageReport | Response:
    report = await service.usage(billing, user.user_id, start, end, group_by)
    wants_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
    if wants_csv:
        return Response(
            service.usage_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
        )
    return report


@router.get("/invoices", response_model=InvoicePage)
async def list_invoices(
    user: CurrentUser,
    invoices: Invoices,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=80, pattern=service.INVOICE_CURSOR_PATTERN)] = None,
) -> InvoicePage:
    return await service.list_invoices(invoices, user.user_id, limit, cursor)


@router.get("/invoices/{invoice_id}", response_model=Invoice)
async def get_invoice(invoice_id: str, user: CurrentUser, invoices: Invoices) -> Invoice:
    return await service.get_invoice(invoices, user.user_id, invoice_id)


@router.get("/plan", response_model=CallerPlan)
async def caller_plan(user: CurrentUser, plans: Plans) -> CallerPlan:
    return await service.caller_plan(plans, user.user_id)


@admin.patch("/users/{user_id}", response_model=UserBilling)
async def update_user(
    user_id: str, body: UpdateUser, _: AdminUser, billing: Billing, plans: Plans, queue: Queue
) -> UserBilling:
    return await service.update_user(billing, plans, queue, user_id, body)


@admin.get("/usage", response_model=AdminUsage)
async def admin_usage(
    _: AdminUser,
    billing: Billing,
    plans: Plans,
    period: Annotated[str | None, Query(pattern=PERIOD_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=60, pattern=KEYSET_CURSOR_PATTERN)] = None,
) -> AdminUsage:
    return await service.admin_usage(billing, plans, period, limit, cursor)


@admin.get("/plans", response_model=PlanList)
async def list_plans(_: AdminUser, plans: Plans) -> PlanList:
    return await service.list_plans(plans)


@admin.patch("/plans/{name}", response_model=PlanInfo)
async def update_plan(
    name: Annotated[str, Path(pattern=PLAN_NAME_PATTERN)], body: UpdatePlan, _: AdminUser, plans: Plans
) -> PlanInfo:
    return await service.update_plan(plans, name, body)


@admin.post("/billing/finalize", response_model=Finalized)
async def finalize(body: FinalizeRequest, _: AdminUser) -> Finalized:
    settings = get_function_settings()
    return await service.finalize(get_database(settings.database_url, settings.database_pool_max), body.period)


app = create_app("billing", [router, admin])
handler = lambda_handler(app)
