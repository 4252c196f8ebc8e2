"""Metering, quotas and invoices against the real PostgreSQL (and moto for the containers function's queue).

Metering is exactly once: samples sent twice, a window metered again, a worker that dies between the usage
write and the cursor's move, all leave the totals unchanged; a late sample inside the grace is counted once in
its own window. Quotas answer 403 quota_exceeded with the figures and a plan change lifts them at once. An
invoice's lines add up exactly to its total and a finalized invoice never changes. Another tenant sees none of
it; only admins reach the admin routes."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from functions.billing.app import app as billing_app
from functions.containers.app import app as containers_app
from shared.billing.invoices import period_containing
from shared.config import get_function_settings
from shared.db import get_database
from shared.jobs import ensure_host_queue
from tests.support.function_apps import client_of, verified_by_auth
from worker.metering import CURSOR, fleet_round, meter_round
from worker.metering_store import ROUND_LOCK, MeteringStore
from worker.settings import WorkerSettings

WINDOW = 60
GRACE = 30
GIB = 1024**3


@dataclass
class User:
    id: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _sql(query: str, params: tuple[Any, ...] | list[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(get_function_settings().database_url, autocommit=True) as conn:
        cursor = conn.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def _settings() -> WorkerSettings:
    return WorkerSettings(metering_window_seconds=WINDOW, metering_grace_seconds=GRACE)


def _totals(owner_id: str) -> dict[str, Decimal]:
    """Per meter: the rollups' sum and, to prove they agree, the records' sum."""
    rollups = dict(
        _sql("SELECT meter, sum(quantity) FROM usage_rollups WHERE owner_id = %s GROUP BY meter", (owner_id,))
    )
    records = dict(
        _sql("SELECT meter, sum(quantity) FROM usage_records WHERE owner_id = %s GROUP BY meter", (owner_id,))
    )
    assert rollups == records
    return rollups


@pytest.fixture
async def apps() -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The auth, containers and billing apps in-process, verifying tokens with the auth app's keys."""
    async with (
        verified_by_auth(containers_app, billing_app) as auth,
        client_of(containers_app) as containers,
        client_of(billing_app) as billing,
    ):
        yield {"auth": auth, "containers": containers, "billing": billing}


async def _sign_in(auth: httpx.AsyncClient, email: str, password: str) -> str:
    answer = await auth.post("/api/auth/signin", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


@pytest.fixture
async def world(apps: dict[str, httpx.AsyncClient]) -> AsyncIterator[dict[str, Any]]:
    """Three signed-in users (owner, stranger, admin), a ready image of the owner, a live host, a test plan."""
    auth = apps["auth"]
    users: list[User] = []
    for _ in range(3):
        email = f"billing-{secrets.token_hex(6)}@example.com"
        password = "correct horse " + secrets.token_hex(4)
        created = await auth.post("/api/auth/signup", json={"email": email, "password": password})
        assert created.status_code == 201, created.text
        users.append(User(created.json()["id"], email, password, await _sign_in(auth, email, password)))
    admin = users[2]
    _sql("UPDATE users SET role = 'admin' WHERE id = %s", (admin.id,))
    admin.token = await _sign_in(auth, admin.email, admin.password)  # the role is in the token
    plan = f"t-{secrets.token_hex(4)}"
    _sql(
        "INSERT INTO plans (name, max_containers, max_memory_mb_per_container, max_memory_mb_total, max_listeners, "
        "max_image_storage_mb, unit_prices) VALUES (%s, 3, 512, 1024, 1, 100, "
        """'{"replica_seconds": "7", "memory_gib_seconds": "3.3", "cpu_seconds": "11"}')""",
        (plan,),
    )
    _sql("UPDATE users SET plan = %s WHERE id = %s", (plan, users[0].id))
    host_id = f"test-host-{secrets.token_hex(6)}"
    image_id = str(uuid.uuid4())
    _sql(
        "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 64, 65536)",
        (host_id,),
    )
    _sql(
        "INSERT INTO images (id, owner_id, name, tag, object_key, status) VALUES (%s, %s, 'web', 'v1', 'k', 'ready')",
        (image_id, users[0].id),
    )
    ensure_host_queue(get_function_settings(), host_id)
    yield {
        "owner": users[0],
        "stranger": users[1],
        "admin": admin,
        "plan": plan,
        "image_id": image_id,
        "host_id": host_id,
    }
    _sql("DELETE FROM users WHERE id = ANY(%s)", ([user.id for user in users],))
    _sql("DELETE FROM hosts WHERE id = %s", (host_id,))
    _sql("DELETE FROM plans WHERE name = %s", (plan,))


def _container(world: dict[str, Any], created_at: datetime, memory_mb: int = 256) -> str:
    container_id = str(uuid.uuid4())
    _sql(
        "INSERT INTO containers (id, owner_id, image_id, name, cpu, memory_mb, host_id, status, desired_state, "
        "created_at) VALUES (%s, %s, %s, %s, 0.5, %s, %s, 'pending', 'running', %s)",
        (
            container_id,
            world["owner"].id,
            world["image_id"],
            f"c-{secrets.token_hex(4)}",
            memory_mb,
            world["host_id"],
            created_at,
        ),
    )
    # The trigger stamped its first event with the clock: move it to the history this test writes.
    _sql("UPDATE container_events SET ts = %s WHERE container_id = %s", (created_at, container_id))
    return container_id


def _event(container_id: str, ts: datetime, status: str) -> None:
    _sql(
        "INSERT INTO container_events (container_id, ts, status, desired_state) VALUES (%s, %s, %s, 'running')",
        (container_id, ts, status),
    )


def _sample(container_id: str, ts: datetime, cpu_ns: int, tx_bytes: int) -> None:
    """One stats sample as the sampler stores it (a repeat of the same instant is the same row)."""
    _sql(
        "INSERT INTO container_stats (container_id, ts, cpu_percent, memory_bytes, memory_limit_bytes, net_rx_bytes, "
        "net_tx_bytes, block_read_bytes, block_write_bytes, cpu_usage_ns) "
        "VALUES (%s, %s, 1, 1, 1, 0, %s, 0, 0, %s) ON CONFLICT (container_id, ts) DO NOTHING",
        (container_id, ts, tx_bytes, cpu_ns),
    )


def _aligned_past(minutes: int) -> datetime:
    now = datetime.now(UTC)
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % WINDOW, UTC) - timedelta(minutes=minutes)


@pytest.fixture
async def metering_lock() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The fleet's metering lock, held for the test: the session's worker meters the same database by the real
    clock, and its rounds skip while another process holds the lock."""
    url = get_function_settings().database_url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as held:
        await held.execute("SELECT pg_advisory_lock(hashtext(%s))", (ROUND_LOCK,))
        yield held


@pytest.fixture
async def metering(metering_lock: psycopg.AsyncConnection[Any]) -> MeteringStore:
    """The metering store, this test's alone (see ``metering_lock``)."""
    # Every test meters from the beginning again: metering twice must change nothing anyway.
    _sql("DELETE FROM meter_cursors WHERE name = %s", (CURSOR,))
    return MeteringStore(get_database(get_function_settings().database_url))


async def test_one_process_of_the_fleet_meters_at_a_time(
    world: dict[str, Any], metering: MeteringStore, metering_lock: psycopg.AsyncConnection[Any]
) -> None:
    # GIVEN a container that ran one window, while another process meters (it holds the fleet's lock)
    base = _aligned_past(5)
    container = _container(world, base)
    _event(container, base, "running")
    _event(container, base + timedelta(seconds=WINDOW), "stopped")

    # WHEN this worker's round comes THEN it skips: nothing metered, the cursor not moved
    assert await fleet_round(metering, _settings()) == 0
    assert await metering.cursor(CURSOR) is None and _totals(world["owner"].id) == {}

    # WHEN the other process is done THEN a round meters the window (this one, or the session's worker's)
    await metering_lock.execute("SELECT pg_advisory_unlock(hashtext(%s))", (ROUND_LOCK,))
    await fleet_round(metering, _settings())
    assert _totals(world["owner"].id)["replica_seconds"] == Decimal(WINDOW)
    assert await metering.cursor(CURSOR) is not None


async def test_lifecycle_and_counters_are_metered_exactly(world: dict[str, Any], metering: MeteringStore) -> None:
    # GIVEN a 512 MB container that ran 90.5 s, stopped, ran 30 s more, with CPU and egress counter samples
    base = _aligned_past(10)
    container = _container(world, base, memory_mb=512)
    _event(container, base + timedelta(seconds=10), "running")
    _event(container, base + timedelta(seconds=100, microseconds=500000), "stopped")
    _event(container, base + timedelta(seconds=200), "starting")
    _event(container, base + timedelta(seconds=230), "stopped")
    for seconds, cpu_ns, tx in [(20, 1_000_000_000, 100), (80, 3_500_000_000, 700), (210, 250_000_000, 50)]:
        _sample(container, base + timedelta(seconds=seconds), cpu_ns, tx)

    # WHEN the windows are metered
    await meter_round(metering, _settings())

    # THEN replica-seconds, memory GiB-seconds, CPU-seconds (the counter reset at the restart) and egress are exact
    totals = _totals(world["owner"].id)
    assert totals["replica_seconds"] == Decimal("120.5")
    assert totals["memory_gib_seconds"] == Decimal("60.25")
    assert totals["cpu_seconds"] == Decimal("3.75")
    assert totals["egress_bytes"] == Decimal(750)


async def test_samples_sent_twice_and_windows_metered_again_change_nothing(
    world: dict[str, Any], metering: MeteringStore
) -> None:
    # GIVEN a running container with samples, metered once
    base = _aligned_past(8)
    container = _container(world, base)
    _event(container, base + timedelta(seconds=5), "running")
    for seconds in range(10, 300, 7):
        _sample(container, base + timedelta(seconds=seconds), seconds * 10_000_000, seconds * 3)
    await meter_round(metering, _settings())
    first = _totals(world["owner"].id)
    assert first["cpu_seconds"] > 0

    # WHEN every sample is sent again and every window metered again (the cursor lost)
    for seconds in range(10, 300, 7):
        _sample(container, base + timedelta(seconds=seconds), seconds * 10_000_000, seconds * 3)
    _sql("DELETE FROM meter_cursors WHERE name = %s", (CURSOR,))
    await meter_round(metering, _settings())

    # THEN the totals are unchanged (the running replica's total grows only by windows that closed since)
    again = _totals(world["owner"].id)
    assert again["cpu_seconds"] == first["cpu_seconds"]
    assert again["egress_bytes"] == first["egress_bytes"]
    assert again["replica_seconds"] - first["replica_seconds"] in (0, WINDOW, 2 * WINDOW)


async def test_a_crash_between_the_write_and_the_cursor_counts_once(
    world: dict[str, Any], metering: MeteringStore
) -> None:
    # GIVEN a container that ran 200 s, with samples
    base = _aligned_past(9)
    container = _container(world, base)
    _event(container, base + timedelta(seconds=30), "running")
    _event(container, base + timedelta(seconds=230), "stopped")
    for seconds in (40, 100, 160, 220):
        _sample(container, base + timedelta(seconds=seconds), seconds * 1_000_000, seconds)

    # WHEN the worker dies in-process right after its first write, before the cursor moves...
    class Crash(Exception):
        pass

    async def crash(start: datetime, _end: datetime) -> None:
        if start >= base + timedelta(seconds=WINDOW):
            raise Crash

    with pytest.raises(Crash):
        await meter_round(metering, _settings(), after_write=crash)
    assert await metering.cursor(CURSOR) == base + timedelta(seconds=WINDOW)
    assert _totals(world["owner"].id)["replica_seconds"] == Decimal(30 + WINDOW)

    # ... and a worker process is killed (SIGKILL-like os._exit) at the same point of a later run
    script = (
        "import asyncio, os\n"
        "from shared.config import get_function_settings\n"
        "from shared.db import get_database\n"
        "from worker.metering import meter_round\n"
        "from worker.metering_store import MeteringStore\n"
        "from worker.settings import WorkerSettings\n"
        "async def die(start, end):\n"
        f"    if start.timestamp() >= {(base + timedelta(seconds=2 * WINDOW)).timestamp()}:\n"
        "        os._exit(137)\n"
        "async def main():\n"
        "    store = MeteringStore(get_database(get_function_settings().database_url))\n"
        f"    await meter_round(store, WorkerSettings(metering_window_seconds={WINDOW}, "
        f"metering_grace_seconds={GRACE}), after_write=die)\n"
        "asyncio.run(main())\n"
    )
    killed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], env=dict(os.environ), capture_output=True, timeout=120
    )
    assert killed.returncode == 137, killed.stderr.decode()[-2000:]
    assert await metering.cursor(CURSOR) == base + timedelta(seconds=2 * WINDOW)
    assert _totals(world["owner"].id)["replica_seconds"] == Decimal(30 + 2 * WINDOW)

    # THEN a full round afterwards meters every window once: the totals are exact
    await meter_round(metering, _settings())
    totals = _totals(world["owner"].id)
    assert totals["replica_seconds"] == Decimal(200)
    assert totals["memory_gib_seconds"] == Decimal(50)
    assert totals["cpu_seconds"] == Decimal("0.22")
    assert totals["egress_bytes"] == Decimal(220)


async def test_a_late_sample_within_the_grace_lands_once_in_its_window(
    world: dict[str, Any], metering: MeteringStore
) -> None:
    # GIVEN a container with a sample early in a window that has just ended (its grace still running)
    now = datetime.now(UTC)
    epoch = int(now.timestamp())
    window_end = datetime.fromtimestamp(epoch - epoch % WINDOW, UTC)
    window_start = window_end - timedelta(seconds=WINDOW)
    container = _container(world, window_start - timedelta(seconds=WINDOW))
    _sample(container, window_start + timedelta(seconds=1), 1_000_000_000, 10)
    before_grace = window_end + timedelta(seconds=GRACE / 2)
    await meter_round(metering, _settings(), now=before_grace)
    assert "cpu_seconds" not in _totals(world["owner"].id), "a window in its grace is not metered yet"

    # WHEN a late sample of that window arrives inside the grace, and the window is metered after it (twice)
    _sample(container, window_start + timedelta(seconds=50), 4_000_000_000, 40)
    after_grace = window_end + timedelta(seconds=GRACE + 1)
    await meter_round(metering, _settings(), now=after_grace)
    await meter_round(metering, _settings(), now=after_grace)

    # THEN it is counted once, in its own window
    rows = _sql(
        "SELECT window_start, quantity FROM usage_records WHERE owner_id = %s AND meter = 'cpu_seconds'",
        (world["owner"].id,),
    )
    assert rows == [(window_start, Decimal(4))]


def _listener(world: dict[str, Any], service: str) -> str:
    listener_id = str(uuid.uuid4())
    for _ in range(20):  # the port is unique across every listener; pick another on a collision
        try:
            _sql(
                "INSERT INTO listeners (id, owner_id, service, port, protocol, algorithm) "
                "VALUES (%s, %s, %s, %s, 'http', 'round_robin')",
                (listener_id, world["owner"].id, service, 20000 + secrets.randbelow(40000)),
            )
            return listener_id
        except psycopg.errors.UniqueViolation:
            continue
    raise AssertionError("no free listener port")


def _traffic(
    listener_id: str, instance: str, resolution: int, ts: datetime, requests: int, bytes_in: int = 0, bytes_out: int = 0
) -> None:
    """One traffic history row as the recorder stores it (instance '' is the listener as a whole)."""
    _sql(
        "INSERT INTO traffic_samples (listener_id, instance, resolution, ts, requests, latency_buckets, bytes_in, "
        "bytes_out) VALUES (%s, %s, %s, %s, %s, '{}', %s, %s)",
        (listener_id, instance, resolution, ts, requests, bytes_in, bytes_out),
    )


async def test_listener_requests_are_metered_once_in_their_window(
    apps: dict[str, httpx.AsyncClient], world: dict[str, Any], metering: MeteringStore
) -> None:
    owner = world["owner"]
    _sql(
        "UPDATE plans SET unit_prices = unit_prices || "
        """'{"listener_requests": "40", "listener_egress_bytes": "2", "listener_ingress_bytes": "0"}' """
        "WHERE name = %s",
        (world["plan"],),
    )
    # GIVEN a listener's traffic history over two windows: its own 10 s rows (requests, and bytes: a GiB out
    # per 100,000 requests, a KiB in per request), their per-instance breakdown (bytes on the instances' side)
    # and the 1 min rows of the same traffic (neither of which may be counted again)
    base = _aligned_past(10)
    listener = _listener(world, "web")
    first_window = {0: 1_000_000, 10: 200_000, 50: 300_000}
    second_window = {60: 700_000, 110: 300_000}
    for offset, requests in {**first_window, **second_window}.items():
        ts = base + timedelta(seconds=offset)
        _traffic(listener, "", 10, ts, requests, requests * 1024, requests // 100_000 * GIB)
        _traffic(listener, "instance-a", 10, ts, requests // 2, requests * 999, requests * 999)
        _traffic(listener, "instance-b", 10, ts, requests - requests // 2, requests * 999, requests * 999)
    for minute in (0, 60):
        _traffic(listener, "", 60, base + timedelta(seconds=minute), 9_999_999, 9 * GIB, 9 * GIB)

    # WHEN the windows are metered, then metered again (a second round, and one with the cursor lost)
    await meter_round(metering, _settings())
    await meter_round(metering, _settings())
    _sql("DELETE FROM meter_cursors WHERE name = %s", (CURSOR,))
    await meter_round(metering, _settings())

    # THEN each window holds the listener's requests once, under the listener and its service
    rows = _sql(
        "SELECT subject_kind, subject_id::text, service, window_start, quantity FROM usage_records "
        "WHERE owner_id = %s AND meter = 'listener_requests' ORDER BY window_start",
        (owner.id,),
    )
    assert rows == [
        ("listener", listener, "web", base, Decimal(1_500_000)),
        ("listener", listener, "web", base + timedelta(seconds=WINDOW), Decimal(1_000_000)),
    ]
    assert _totals(owner.id)["listener_requests"] == Decimal(2_500_000)
    # AND the bytes its clients sent and read, per window, from the same rows only
    rows = _sql(
        "SELECT meter, window_start, quantity FROM usage_records WHERE owner_id = %s AND meter LIKE 'listener_%%bytes' "
        "ORDER BY meter, window_start",
        (owner.id,),
    )
    assert rows == [
        ("listener_egress_bytes", base, Decimal(15 * GIB)),
        ("listener_egress_bytes", base + timedelta(seconds=WINDOW), Decimal(10 * GIB)),
        ("listener_ingress_bytes", base, Decimal(1_500_000 * 1024)),
        ("listener_ingress_bytes", base + timedelta(seconds=WINDOW), Decimal(1_000_000 * 1024)),
    ]

    # AND usage by meter and the period's draft invoice show them: 2.5 million requests x 40 cents = 100
    period = period_containing(base)
    start = period.start
    params = {"from": start.isoformat(), "to": period.end.isoformat()}
    usage = (await apps["billing"].get("/api/billing/usage", params=params, headers=owner.headers)).json()
    assert ("listener_requests", 2_500_000.0, "request") in [
        (i["meter"], i["quantity"], i["unit"]) for i in usage["items"]
    ]
    invoices = (await apps["billing"].get("/api/billing/invoices", headers=owner.headers)).json()["items"]
    [draft] = [item for item in invoices if item["period"] == f"{start:%Y-%m}"]
    [line] = [line for line in draft["lines"] if line["meter"] == "listener_requests"]
    assert (line["quantity"], line["unit"], line["price_unit"], line["amount"]) == (
        2_500_000.0,
        "request",
        "million requests",
        100,
    )
    # 25 GiB out x 2 cents = 50; data in is free
    lines = {line["meter"]: line for line in draft["lines"]}
    egress, ingress = lines["listener_egress_bytes"], lines["listener_ingress_bytes"]
    assert (egress["quantity"], egress["unit"], egress["price_unit"], egress["amount"]) == (
        float(25 * GIB),
        "byte",
        "GiB",
        50,
    )
    assert (ingress["quantity"], ingress["amount"]) == (2_500_000 * 1024.0, 0)


async def test_quotas_refuse_with_figures_and_a_plan_change_lifts_them(
    apps: dict[str, httpx.AsyncClient], world: dict[str, Any]
) -> None:
    containers, billing = apps["containers"], apps["billing"]
    owner, admin = world["owner"], world["admin"]

    async def create(memory_mb: int) -> httpx.Response:
        _sql("UPDATE hosts SET heartbeat_at = now() WHERE id = %s", (world["host_id"],))
        body = {"image_id": world["image_id"], "name": f"c-{secrets.token_hex(4)}", "memory_mb": memory_mb}
        return await containers.post("/api/containers", json=body, headers=owner.headers)

    # GIVEN the test plan: 3 containers, 512 MB each, 1024 MB in total
    # WHEN/THEN a container above the per-container memory is refused, naming the quota, limit and use
    refused = await create(1024)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert refused.json()["error"]["details"] == {"quota": "max_memory_mb_per_container", "limit": 512, "used": 1024}

    # past the total memory
    assert (await create(512)).status_code == 202
    assert (await create(512)).status_code == 202
    refused = await create(256)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == {"quota": "max_memory_mb_total", "limit": 1024, "used": 1024}

    # past the number of containers (with the memory lifted by the admin's edit of the plan)
    edited = await billing.patch(
        f"/api/admin/plans/{world['plan']}", json={"max_memory_mb_total": 4096}, headers=admin.headers
    )
    assert edited.status_code == 200, edited.text
    assert (await create(256)).status_code == 202
    refused = await create(256)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == {"quota": "max_containers", "limit": 3, "used": 3}
    plan = (await billing.get("/api/billing/plan", headers=owner.headers)).json()
    assert plan["plan"]["name"] == world["plan"]
    assert plan["usage"] == {"containers": 3, "memory_mb_total": 1280, "listeners": 0, "image_storage_mb": 0}

    # WHEN the admin moves the owner to pro, THEN the same request passes at once (same access token)
    changed = await billing.patch(f"/api/admin/users/{owner.id}", json={"plan": "pro"}, headers=admin.headers)
    assert changed.status_code == 200, changed.text
    assert (await create(2048)).status_code == 202
    assert (await billing.get("/api/billing/plan", headers=owner.headers)).json()["plan"]["name"] == "pro"

    # WHEN the admin suspends the owner, THEN their containers are set to stop and create calls answer 403
    suspended = await billing.patch(f"/api/admin/users/{owner.id}", json={"suspended": True}, headers=admin.headers)
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["suspended"] is True and suspended.json()["stopped_containers"] == 4
    refused = await create(256)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_suspended"
    assert _sql("SELECT count(*) FROM containers WHERE owner_id = %s AND desired_state = 'running'", (owner.id,)) == [
        (0,)
    ]
    lifted = await billing.patch(f"/api/admin/users/{owner.id}", json={"suspended": False}, headers=admin.headers)
    assert lifted.json()["suspended"] is False
    assert (await create(256)).status_code == 202


async def test_invoices_add_up_finalize_once_and_stay_private(
    apps: dict[str, httpx.AsyncClient], world: dict[str, Any]
) -> None:
    billing = apps["billing"]
    owner, stranger, admin = world["owner"], world["stranger"], world["admin"]
    # GIVEN usage in this period's rollups: quantities whose prices need rounding
    hour = period_containing(datetime.now(UTC)).start
    for meter, quantity in [("replica_seconds", "3600.4"), ("memory_gib_seconds", "1234.567"), ("cpu_seconds", "17.3")]:
        _sql(
            "INSERT INTO usage_rollups (owner_id, hour, meter, service, quantity) VALUES (%s, %s, %s, '', %s)",
            (owner.id, hour, meter, quantity),
        )

    # WHEN the owner reads their invoices
    page = await billing.get("/api/billing/invoices", headers=owner.headers)
    assert page.status_code == 200, page.text
    [draft] = page.json()["items"]

    # THEN the draft's lines are priced per line (half up) and add up exactly to the total
    assert draft["status"] == "draft" and draft["currency"] == "USD"
    amounts = {line["meter"]: line["amount"] for line in draft["lines"]}
    # 3600.4 s x 7 / 3600 = 7.0008 -> 7; 1234.567 x 3.3 / 3600 = 1.1317 -> 1; 17.3 x 11 / 3600 = 0.0529 -> 0
    assert amounts == {"replica_seconds": 7, "memory_gib_seconds": 1, "cpu_seconds": 0}
    assert sum(amounts.values()) == draft["total"] == 8

    # the draft refreshes as usage arrives
    _sql(
        "UPDATE usage_rollups SET quantity = quantity + 3600 WHERE owner_id = %s AND meter = 'replica_seconds'",
        (owner.id,),
    )
    refreshed = (await billing.get(f"/api/billing/invoices/{draft['id']}", headers=owner.headers)).json()
    assert refreshed["total"] == 15

    # WHEN the period is finalized (by an admin; a user may not)
    period = f"{hour:%Y-%m}"
    assert (
        await billing.post("/api/admin/billing/finalize", json={"period": period}, headers=owner.headers)
    ).status_code == 403
    finalized = await billing.post("/api/admin/billing/finalize", json={"period": period}, headers=admin.headers)
    assert finalized.status_code == 200, finalized.text
    assert draft["id"] in finalized.json()["invoice_ids"]
    final = (await billing.get(f"/api/billing/invoices/{draft['id']}", headers=owner.headers)).json()
    assert final["status"] == "finalized" and final["total"] == sum(line["amount"] for line in final["lines"]) == 15

    # THEN it never changes: not by the database, not by late usage (which becomes an adjustment invoice)
    with pytest.raises(psycopg.errors.CheckViolation):
        _sql("UPDATE invoice_lines SET amount = 0 WHERE invoice_id = %s", (draft["id"],))
    with pytest.raises(psycopg.errors.CheckViolation):
        _sql("UPDATE invoices SET total = 0 WHERE id = %s", (draft["id"],))
    _sql(
        "UPDATE usage_rollups SET quantity = quantity + 1800 WHERE owner_id = %s AND meter = 'replica_seconds'",
        (owner.id,),
    )
    again = await billing.post("/api/admin/billing/finalize", json={"period": period}, headers=admin.headers)
    [adjustment_id] = [
        i
        for i in again.json()["invoice_ids"]
        if (await billing.get(f"/api/billing/invoices/{i}", headers=owner.headers)).status_code == 200
    ]
    assert (await billing.get(f"/api/billing/invoices/{draft['id']}", headers=owner.headers)).json() == final
    adjustment = (await billing.get(f"/api/billing/invoices/{adjustment_id}", headers=owner.headers)).json()
    assert adjustment["kind"] == "adjustment" and adjustment["status"] == "finalized"
    assert [(line["meter"], line["quantity"], line["amount"]) for line in adjustment["lines"]] == [
        ("replica_seconds", 1800.0, 4)  # 9000.4 s -> 17.5 -> 18 in all, 14 billed before
    ]
    assert adjustment["total"] == 4
    assert (
        adjustment_id
        not in (
            await billing.post("/api/admin/billing/finalize", json={"period": period}, headers=admin.headers)
        ).json()["invoice_ids"]
    )

    # AND another tenant sees none of it; a stranger is no admin
    assert (await billing.get(f"/api/billing/invoices/{draft['id']}", headers=stranger.headers)).status_code == 404
    theirs = (await billing.get("/api/billing/invoices", headers=stranger.headers)).json()["items"]
    assert all(item["total"] == 0 and item["lines"] == [] for item in theirs)
    usage = (await billing.get("/api/billing/usage", headers=stranger.headers)).json()
    assert usage["items"] == []
    for method, path in [
        ("GET", "/api/admin/usage"),
        ("GET", "/api/admin/plans"),
        ("PATCH", f"/api/admin/users/{owner.id}"),
    ]:
        answer = await billing.request(
            method, path, json={"plan": "team"} if method == "PATCH" else None, headers=stranger.headers
        )
        assert answer.status_code == 403, (method, path, answer.text)
    overview = (await billing.get("/api/admin/usage?limit=100", headers=admin.headers)).json()
    mine = next(item for item in overview["items"] if item["id"] == owner.id)
    assert mine["usage"]["replica_seconds"] == 9000.4


async def test_usage_by_meter_service_and_day_and_as_csv(
    apps: dict[str, httpx.AsyncClient], world: dict[str, Any]
) -> None:
    billing, owner = apps["billing"], world["owner"]
    hour = period_containing(datetime.now(UTC)).start
    for service, quantity in [("web", "10"), ("", "5")]:
        _sql(
            "INSERT INTO usage_rollups (owner_id, hour, meter, service, quantity) "
            "VALUES (%s, %s, 'egress_bytes', %s, %s)",
            (owner.id, hour, service, quantity),
        )
    params = {"from": f"{hour:%Y-%m-%d}", "to": (hour + timedelta(days=1)).isoformat()}
    by_meter = (await billing.get("/api/billing/usage", params=params, headers=owner.headers)).json()
    assert [(i["meter"], i["quantity"], i["unit"]) for i in by_meter["items"]] == [("egress_bytes", 15.0, "byte")]
    by_service = (
        await billing.get("/api/billing/usage", params={**params, "group_by": "service"}, headers=owner.headers)
    ).json()
    assert {i["service"]: i["quantity"] for i in by_service["items"]} == {None: 5.0, "web": 10.0}
    by_day = (
        await billing.get("/api/billing/usage", params={**params, "group_by": "day"}, headers=owner.headers)
    ).json()
    assert [(i["day"], i["quantity"]) for i in by_day["items"]] == [(f"{hour:%Y-%m-%d}", 15.0)]
    as_csv = await billing.get("/api/billing/usage", params=params, headers={**owner.headers, "Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text == "meter,quantity,unit\negress_bytes,15,byte\n"
    bad = await billing.get("/api/billing/usage", params={"from": "yesterday"}, headers=owner.headers)
    assert bad.status_code == 422


async def test_concurrent_creates_never_pass_the_container_quota(
    apps: dict[str, httpx.AsyncClient], world: dict[str, Any]
) -> None:
    # GIVEN the test plan (3 containers; 128 MB each fits the memory quotas three times over)
    containers, owner = apps["containers"], world["owner"]
    _sql("UPDATE hosts SET heartbeat_at = now() WHERE id = %s", (world["host_id"],))

    async def create(number: int) -> httpx.Response:
        body = {"image_id": world["image_id"], "name": f"race-{number}", "memory_mb": 128}
        return await containers.post("/api/containers", json=body, headers=owner.headers)

    # WHEN 20 creates arrive at once
    answers = await asyncio.gather(*(create(number) for number in range(20)))

    # THEN exactly 3 are accepted and the other 17 refused with the quota's figures
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [202] * 3 + [403] * 17, [answer.text for answer in answers if answer.status_code >= 500]
    for answer in answers:
        if answer.status_code == 403:
            assert answer.json()["error"]["code"] == "quota_exceeded"
            assert answer.json()["error"]["details"] == {"quota": "max_containers", "limit": 3, "used": 3}
    assert _sql("SELECT count(*) FROM containers WHERE owner_id = %s", (owner.id,)) == [(3,)]


async def test_a_service_reserves_its_declared_replicas_not_its_surge(world: dict[str, Any]) -> None:
    from shared.billing.quotas import check_container_quota, check_service_quota
    from shared.errors import QuotaExceeded

    database = get_database(get_function_settings().database_url)
    owner = world["owner"].id
    # GIVEN a service declaring 2 replicas of 256 MB, rolling a deploy: 3 replicas exist (one is the surge)
    [(service_id,)] = _sql(
        "INSERT INTO services (owner_id, name, replicas, update_policy) VALUES (%s, 'web', 2, '{}') RETURNING id",
        (owner,),
    )
    _sql(
        "INSERT INTO service_releases (service_id, number, image_id, config, config_digest) "
        """VALUES (%s, 1, %s, '{"memory_mb": 256}', 'sha256:x')""",
        (service_id, world["image_id"]),
    )
    for _ in range(3):
        replica = _container(world, datetime.now(UTC), memory_mb=256)
        _sql("UPDATE containers SET service_id = %s, service = 'web' WHERE id = %s", (service_id, replica))

    # THEN the surge replica is not counted: one more container fits the 3-container plan, two do not
    await check_container_quota(database, owner, 1, 256)
    with pytest.raises(QuotaExceeded) as refused:
        await check_container_quota(database, owner, 2, 128)
    assert refused.value.details == {"quota": "max_containers", "limit": 3, "used": 2}
    # AND the service is checked against its own reservation: 2 -> 3 replicas fits, 2 -> 4 does not, and a
    # deploy that doubles each replica's memory fits the 1024 MB total (2 x 512), 3 replicas of it would not
    await check_service_quota(database, owner, "web", 3, 256)
    with pytest.raises(QuotaExceeded):
        await check_service_quota(database, owner, "web", 4, 256)
    await check_service_quota(database, owner, "web", 2, 512)
    with pytest.raises(QuotaExceeded) as refused:
        await check_service_quota(database, owner, "web", 3, 512)
    assert refused.value.details == {"quota": "max_memory_mb_total", "limit": 1024, "used": 512}
