"""Request and answer bodies of the billing routes (/api/billing/*, and billing's /api/admin/* routes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.patterns import NO_CONTROL_PATTERN

PLAN_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
PERIOD_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
PRICE_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"
GroupBy = Literal["meter", "service", "day"]


class UsageItem(BaseModel):
    meter: str
    quantity: float
    unit: str
    service: str | None = None
    day: str | None = None


class UsageReport(BaseModel):
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    group_by: GroupBy
    items: list[UsageItem]


class InvoiceLine(BaseModel):
    meter: str
    quantity: float
    unit: str
    unit_price: str  # exact decimal: minor units per price_unit
    price_unit: str
    amount: int  # minor units


class Invoice(BaseModel):
    id: str
    kind: Literal["usage", "adjustment"]
    period: str
    period_start: datetime
    period_end: datetime
    plan: str
    status: Literal["draft", "finalized"]
    currency: str
    total: int
    lines: list[InvoiceLine]
    created_at: datetime
    updated_at: datetime
    finalized_at: datetime | None


class InvoicePage(BaseModel):
    items: list[Invoice]
    next_cursor: str | None


class PlanQuotas(BaseModel):
    max_containers: int
    max_memory_mb_per_container: int
    max_memory_mb_total: int
    max_listeners: int
    max_image_storage_mb: int


class QuotaUse(BaseModel):
    containers: int
    memory_mb_total: int
    listeners: int
    image_storage_mb: int


class PlanInfo(BaseModel):
    name: str
    currency: str
    quotas: PlanQuotas
    # API requests per minute per user; null: the API's default per-user limits (which are also the ceiling)
    api_requests_per_minute: int | None
    unit_prices: dict[str, str]
    price_units: dict[str, str]


class CallerPlan(BaseModel):
    plan: PlanInfo
    usage: QuotaUse
    suspended: bool


class PlanList(BaseModel):
    items: list[PlanInfo]


class UpdatePlan(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    max_containers: int | None = Field(default=None, ge=0, le=100000)
    max_memory_mb_per_container: int | None = Field(default=None, ge=16, le=65536)
    max_memory_mb_total: int | None = Field(default=None, ge=0, le=100_000_000)
    max_listeners: int | None = Field(default=None, ge=0, le=100000)
    max_image_storage_mb: int | None = Field(default=None, ge=0, le=100_000_000)
    unit_prices: dict[str, str] | None = Field(default=None, max_length=20)
    api_requests_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)


class UpdateUser(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    plan: str | None = Field(default=None, pattern=PLAN_NAME_PATTERN)
    suspended: bool | None = None
    reason: str | None = Field(default=None, max_length=200, pattern=NO_CONTROL_PATTERN)


class UserBilling(BaseModel):
    id: str
    email: str
    plan: str
    suspended: bool
    suspended_at: datetime | None
    suspended_reason: str | None
    stopped_containers: int = 0


class AdminUsageItem(BaseModel):
    id: str
    email: str
    plan: str
    suspended: bool
    usage: dict[str, float]
    draft_total: int


class AdminUsage(BaseModel):
    period: str
    items: list[AdminUsageItem]
    next_cursor: str | None


class FinalizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    period: str = Field(pattern=PERIOD_PATTERN)


class Finalized(BaseModel):
    period: str
    invoice_ids: list[str]
