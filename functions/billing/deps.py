"""Dependencies of the billing routes: settings, the stores and the job queue (suspension stops containers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from functions.billing.store import BillingStore
from shared.billing.invoice_store import InvoiceStore
from shared.billing.plan_store import PlanStore
from shared.config import FunctionSettings, get_function_settings
from shared.db import Database, get_database
from shared.jobs import SqsHostJobQueues


def _database() -> Database:
    settings = get_function_settings()
    return get_database(settings.database_url, settings.database_pool_max)


async def _billing() -> BillingStore:
    return BillingStore(_database())


async def _plans() -> PlanStore:
    return PlanStore(_database())


async def _invoices() -> InvoiceStore:
    return InvoiceStore(_database())


async def _queue() -> SqsHostJobQueues:
    """Stop jobs go to the queue of each container's host."""
    return SqsHostJobQueues(get_function_settings())


Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
Billing = Annotated[BillingStore, Depends(_billing)]
Plans = Annotated[PlanStore, Depends(_plans)]
Invoices = Annotated[InvoiceStore, Depends(_invoices)]
Queue = Annotated[SqsHostJobQueues, Depends(_queue)]
