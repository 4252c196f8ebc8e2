"""Listener metering end to end: requests sent through a listener of the real lb-runtime, read into the
listener's traffic history by the worker's recording round, are metered as ``listener_requests`` exactly
once, and the user's usage (``GET /api/billing/usage``, by meter, through the gateway) shows them.

The test owns its lb-runtime (tests.e2e.test_traffic_history's private one on 127.0.0.2) and does the
recorder's rounds itself, so every request is in the history before it meters. It meters with the metering
functions directly and writes only its own listener's records, in the session worker's window size: the
record ids are the ones the session worker derives, so whichever of the two writes a window first, the other
changes nothing (and no other tenant's window is touched before its grace).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.billing.invoices import period_containing
from shared.billing.meters import MeterName
from shared.db import Database
from tests.conftest import TEST_DATABASE_URL, RunningGateway
from tests.e2e.conftest import SignedInUser
from tests.e2e.test_traffic import web_archive  # noqa: F401
from tests.e2e.test_traffic_history import (  # noqa: F401
    PrivateLb,
    private_lb,
    record_reading,
    send,
    served_user,
    wait_until_served,
)
from worker.metering import meter_window, window_bounds
from worker.metering_store import MeteringStore
from worker.settings import WorkerSettings

pytestmark = pytest.mark.docker

REQUESTS = 25


async def meter_listener(listener_id: str, since: datetime) -> int:
    """Meter every window from the one holding ``since`` to the current one, keeping the listener's records
    only; how many records were inserted."""
    window = WorkerSettings().metering_window_seconds
    database = Database(TEST_DATABASE_URL, max_size=2)
    await database.open()
    try:
        store = MeteringStore(database)
        start = window_bounds(since, window)
        inserted = 0
        while start <= datetime.now(UTC):
            end = start + timedelta(seconds=window)
            records = [r for r in await meter_window(store, start, end) if r.subject_id == listener_id]
            inserted += await store.write(records)
            start = end
        return inserted
    finally:
        await database.close()


def listener_usage(client: httpx.Client, user: SignedInUser, since: datetime) -> float:
    period = period_containing(since)
    answer = client.get(
        "/api/billing/usage",
        params={"from": period.start.isoformat(), "to": period.end.isoformat(), "group_by": "meter"},
        headers=user.auth_headers,
    )
    assert answer.status_code == 200, answer.text
    quantities = {item["meter"]: item["quantity"] for item in answer.json()["items"]}
    return float(quantities.get(MeterName.LISTENER_REQUESTS, 0))


def test_requests_through_a_listener_are_metered_once(
    gateway: RunningGateway,
    served_user: tuple[SignedInUser, dict[str, Any]],  # noqa: F811
    private_lb: PrivateLb,  # noqa: F811
) -> None:
    user, listener = served_user
    # GIVEN the private lb-runtime serving the listener, and the recorder's first reading of it (its cursor)
    wait_until_served(private_lb, listener["id"])
    record_reading(private_lb.admin_url)
    since = datetime.now(UTC) - timedelta(seconds=1)

    # WHEN requests go through the listener, the recorder reads them into the history, and the windows are
    # metered twice
    send(listener["port"], REQUESTS)
    record_reading(private_lb.admin_url)
    first = asyncio.run(meter_listener(listener["id"], since))
    again = asyncio.run(meter_listener(listener["id"], since))

    # THEN the listener's requests are its usage, counted once
    assert first >= 1 and again == 0
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert Decimal(str(listener_usage(client, user, since))) == REQUESTS
