"""What listener traffic is billed, against the real PostgreSQL:

- traffic through lb-runtime's shared ports (host routes, reported under ``<listener>:<host>`` ids) is
  recorded into the history of the listener owning the host name, summed with its own port's per interval,
  and metered with it as ``listener_requests`` / ``listener_ingress_bytes`` / ``listener_egress_bytes``,
  exactly and once (a route that goes away and comes back is neither counted twice nor lost);
- a container's ``egress_bytes`` is what it transmitted less what lb-runtime received from it (its answers,
  billed to the listener), per window and never below zero, while a container sending elsewhere is metered
  in full; metering again changes nothing.

The recorder is fed lb-runtime's own /metrics text, made by lb-runtime's collector from figures in the shape
its processes report (lb_runtime.stats), so the ids and families are the ones lb-runtime serves.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from lb_runtime.stats import LATENCY_BUCKETS, STATUS_CLASSES, LbCollector
from prometheus_client import CollectorRegistry, generate_latest

from functions.load_balancer.service import listener_history
from functions.load_balancer.store import ListenerStore, TrafficHistoryStore
from shared.config import get_function_settings
from shared.db import Database, get_database
from shared.host_routes import redirect_route_id, route_id
from shared.traffic_history import parse_lb_metrics
from tests.integration.test_billing import (  # noqa: F401
    WINDOW,
    _aligned_past,
    _container,
    _event,
    _listener,
    _sample,
    _settings,
    _sql,
    _traffic,
    apps,
    metering,
    metering_lock,
    world,
)
from worker.metering import CURSOR, meter_round, meter_window, window_bounds
from worker.metering_store import MeteringStore
from worker.traffic_store import TrafficStore

# instance id -> (requests, bytes sent to it, bytes received from it), cumulative
Instances = dict[str, tuple[int, int, int]]


def _figures(reported_id: str, bytes_in: int, bytes_out: int, instances: Instances | None = None) -> dict[str, Any]:
    """One reported id's cumulative figures as an lb-runtime process reports them (lb_runtime.stats)."""
    return {
        "id": reported_id,
        "active_connections": 0,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "instances": [
            {
                "id": instance,
                "available": True,
                "in_flight": 0,
                "failures": 0,
                "connections_opened": requests,
                "status_counts": [requests if status == "2xx" else 0 for status in STATUS_CLASSES],
                "bucket_counts": [requests if index == 3 else 0 for index in range(len(LATENCY_BUCKETS) + 1)],
                "latency_sum": requests * 0.004,
                "bytes_in": sent,
                "bytes_out": received,
            }
            for instance, (requests, sent, received) in (instances or {}).items()
        ],
    }


def _metrics(*figures: dict[str, Any]) -> str:
    """lb-runtime's /metrics text for these figures."""
    registry = CollectorRegistry()
    registry.register(LbCollector(lambda: figures))
    return generate_latest(registry).decode()


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    yield get_database(get_function_settings().database_url)


async def test_shared_port_traffic_is_recorded_and_metered_as_its_listeners(
    world: dict[str, Any],  # noqa: F811
    database: Database,
) -> None:
    owner = world["owner"]
    listener = _listener(world, "web")
    stranger_listener = str(uuid.uuid4())  # a route of a listener that no longer exists: nobody's
    blog, shop = route_id(listener, "blog.example"), route_id(listener, "shop.example")
    redirect = redirect_route_id(listener, "shop.example")
    source = f"test-lb-{secrets.token_hex(4)}"
    store = TrafficStore(database)
    since = datetime.now(UTC) - timedelta(seconds=1)

    async def record(*figures: dict[str, Any]) -> None:
        await store.record(source, parse_lb_metrics(_metrics(*figures)), 10)

    # GIVEN the recorder's first reading: the listener's own port, one of its names on the shared http port,
    # and the shared port's front (requests for unknown hosts: nobody's)
    await record(
        _figures(listener, 1_000, 5_000, {"c-1": (10, 1_100, 4_800)}),
        _figures(blog, 400, 2_000, {"c-1": (4, 450, 1_900)}),
        _figures("shared-http", 7, 70),
    )

    # WHEN traffic arrives on the listener's port and on its names (one of them new, with the http side of
    # its https site redirecting), and on a route of a listener that is gone
    await record(
        _figures(listener, 1_300, 6_500, {"c-1": (13, 1_430, 6_240)}),
        _figures(blog, 1_100, 5_500, {"c-1": (11, 1_220, 5_300)}),
        _figures(shop, 200, 800, {"c-2": (2, 220, 760)}),
        _figures(redirect, 50, 250),
        _figures(route_id(stranger_listener, "gone.example"), 9_000, 9_000, {"c-9": (99, 9_000, 9_000)}),
        _figures("shared-http", 27, 170),
    )
    # AND the blog name is detached (its route goes away) while the rest carry on
    await record(
        _figures(listener, 1_400, 7_000, {"c-1": (14, 1_540, 6_720)}),
        _figures(shop, 300, 1_300, {"c-2": (3, 330, 1_240)}),
        _figures(redirect, 80, 400),
        _figures("shared-http", 30, 200),
    )
    # AND attached again: lb-runtime's new route counts from zero
    await record(
        _figures(listener, 1_400, 7_000, {"c-1": (14, 1_540, 6_720)}),
        _figures(blog, 100, 600, {"c-1": (1, 110, 550)}),
        _figures(shop, 300, 1_300, {"c-2": (3, 330, 1_240)}),
        _figures(redirect, 80, 400),
    )

    # THEN the listener's history (its series as the API answers it, at both steps) holds its own port's
    # traffic and its names', exactly: 3 + 7 + 2 + 1 + 1 + 1 requests
    expected = {"": (15, 1_580, 7_800), "c-1": (12, 1_320, 5_870), "c-2": (3, 330, 1_240)}
    listeners, history = ListenerStore(database), TrafficHistoryStore(database)
    for step in (10, 60):
        series = await listener_history(
            listeners, history, owner.id, listener, (since - timedelta(minutes=1)).isoformat(), None, step
        )
        found = {"": _summed(series.points)} | {item.id: _summed(item.points) for item in series.instances}
        assert found == expected, step
    assert not _sql("SELECT 1 FROM traffic_samples WHERE listener_id = %s", (stranger_listener,))

    # AND metering its windows (twice) bills those requests and bytes once
    records = await _meter_listener(MeteringStore(database), listener, since)
    assert records > 0
    assert await _meter_listener(MeteringStore(database), listener, since) == 0
    assert dict(
        _sql(
            "SELECT meter, sum(quantity) FROM usage_records WHERE subject_id = %s GROUP BY meter",
            (listener,),
        )
    ) == {
        "listener_requests": Decimal(15),
        "listener_ingress_bytes": Decimal(1_580),
        "listener_egress_bytes": Decimal(7_800),
    }
    _sql("DELETE FROM traffic_cursors WHERE source = %s", (source,))


def _summed(points: list[Any]) -> tuple[int, int, int]:
    return (
        sum(point.requests for point in points),
        sum(point.bytes_in for point in points),
        sum(point.bytes_out for point in points),
    )


async def _meter_listener(store: MeteringStore, listener_id: str, since: datetime) -> int:
    """Meter the windows from ``since`` to now, writing the listener's records only; how many were new."""
    start, inserted = window_bounds(since, WINDOW), 0
    while start <= datetime.now(UTC):
        end = start + timedelta(seconds=WINDOW)
        records = [record for record in await meter_window(store, start, end) if record.subject_id == listener_id]
        inserted += await store.write(records)
        start = end
    return inserted


async def test_container_egress_leaves_out_its_answers_through_listeners(
    apps: dict[str, httpx.AsyncClient],  # noqa: F811
    world: dict[str, Any],  # noqa: F811
    metering: MeteringStore,  # noqa: F811
) -> None:
    # GIVEN a container serving two listeners (the instance rows of their histories count what lb-runtime
    # received from it) and one that sends elsewhere, both with transmit counter samples over two windows
    base = _aligned_past(10)
    served, sender = _container(world, base), _container(world, base)
    for container in (served, sender):
        _event(container, base + timedelta(seconds=1), "running")
    for seconds, transmitted in [(5, 0), (30, 600_000), (70, 1_000_000), (115, 1_200_000)]:
        _sample(served, base + timedelta(seconds=seconds), 1, transmitted)
    for seconds, transmitted in [(5, 0), (50, 300_000), (100, 450_000)]:
        _sample(sender, base + timedelta(seconds=seconds), 1, transmitted)
    web, api = _listener(world, "web"), _listener(world, "web")
    # first window: 580,000 + 5,000 bytes of answers to lb-runtime of the 600,000 transmitted
    _traffic(web, served, 10, base + timedelta(seconds=10), 3, 900, 300_000)
    _traffic(web, served, 10, base + timedelta(seconds=20), 3, 900, 280_000)
    _traffic(api, served, 10, base + timedelta(seconds=40), 1, 300, 5_000)
    # second window: more answers recorded than transmitted (observed before the counter showed them)
    _traffic(web, served, 10, base + timedelta(seconds=60), 3, 900, 650_000)
    # neither the listeners' own rows (their clients' side) nor the minute rows are the container's
    for listener in (web, api):
        _traffic(listener, "", 10, base + timedelta(seconds=10), 7, 10**9, 10**9)
        _traffic(listener, served, 60, base, 7, 10**9, 10**9)

    # WHEN the windows are metered, again, and once more with the cursor lost
    await meter_round(metering, _settings())
    await meter_round(metering, _settings())
    _sql("DELETE FROM meter_cursors WHERE name = %s", (CURSOR,))
    await meter_round(metering, _settings())

    # THEN the served container's egress is its transmitted bytes less its answers (none below zero), and the
    # other container's is all it sent
    rows = _sql(
        "SELECT subject_id::text, window_start, quantity FROM usage_records WHERE meter = 'egress_bytes' "
        "AND subject_id = ANY(%s::uuid[]) ORDER BY subject_id = %s DESC, window_start",
        ([served, sender], served),
    )
    assert rows == [
        (served, base, Decimal(15_000)),
        (sender, base, Decimal(300_000)),
        (sender, base + timedelta(seconds=WINDOW), Decimal(150_000)),
    ]
    rollup = _sql(
        "SELECT sum(quantity) FROM usage_rollups WHERE owner_id = %s AND meter = 'egress_bytes'", (world["owner"].id,)
    )
    assert rollup == [(Decimal(465_000),)]
