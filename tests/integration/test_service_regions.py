"""Services in regions: the services function (ASGI, real tokens) and the rollout driver against the real
PostgreSQL and moto, with hosts of the test's own in two regions (host rows and queues, no Docker). A service
declaring a minimum per region gets that many replicas pinned to each region, the rest anywhere; a scale down
keeps the pinned ones; a pinned replica whose host is lost moves to another host of its region and never out of
it; and an unknown region, minimums above the replicas or above the plan are refused."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from functions.services.app import app as services_app
from shared.db import Database
from shared.host_store import HostStore
from shared.jobs import SqsHostJobQueues
from tests.integration import test_rescheduling as rescheduling
from tests.integration.test_containers_api import User, _sql
from tests.integration.test_rescheduling import container, go_silent, live_host
from tests.support.function_apps import client_of, verified_by_auth
from tests.support.waiting import wait_until_async
from worker.hosts import mark_stale_hosts_down
from worker.rescheduling import reschedule_containers_of_down_hosts
from worker.rollout_store import RolloutStore
from worker.rollouts import RolloutDriver
from worker.settings import WorkerSettings

# The rescheduling tests' fixtures: the test database, its host store, and hosts of the test's own (the hosts
# up before the test drain meanwhile, so placement sees only the test's).
database = rescheduling.database
store = rescheduling.store
placement = rescheduling.placement


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    """The services app, verifying tokens against the auth app's published keys (as a gateway would)."""
    async with verified_by_auth(services_app) as auth, client_of(services_app) as client:
        client.auth_client = auth  # type: ignore[attr-defined]
        yield client


@pytest.fixture
async def owner(api: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    """A signed-in user on the pro plan (room for a few replicas) with a ready image; removed after."""
    auth: httpx.AsyncClient = api.auth_client  # type: ignore[attr-defined]
    email, password = f"regions-{secrets.token_hex(6)}@example.com", "correct horse " + secrets.token_hex(4)
    created = await auth.post("/api/auth/signup", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    _sql("UPDATE users SET plan = 'pro' WHERE id = %s", (user_id,))
    signed_in = await auth.post("/api/auth/signin", json={"email": email, "password": password})
    assert signed_in.status_code == 200, signed_in.text
    image_id = str(uuid.uuid4())
    _sql(
        "INSERT INTO images (id, owner_id, name, tag, object_key, status) VALUES (%s, %s, 'web', 'v1', 'k', 'ready')",
        (image_id, user_id),
    )
    yield {"user": User(user_id, signed_in.json()["access_token"]), "image_id": image_id}
    _sql("DELETE FROM containers WHERE owner_id = %s", (user_id,))
    _sql("DELETE FROM users WHERE id = %s", (user_id,))


@pytest.fixture
async def regions(store: HostStore, placement: Callable[[str], str]) -> dict[str, Any]:
    """Two regions of the test's own: a with two live hosts, b with one (each with its job queue)."""
    a, b = f"ra{secrets.token_hex(3)}", f"rb{secrets.token_hex(3)}"
    hosts = {"a1": placement("a1"), "a2": placement("a2"), "b1": placement("b1")}
    for role, host_id in hosts.items():
        await live_host(store, host_id)
        await store.upsert(host_id, "127.0.0.1", 2, 2048, a if role.startswith("a") else b)
    return {"a": a, "b": b, **hosts}


def _driver(database: Database, store: HostStore) -> RolloutDriver:
    settings = WorkerSettings(host_down_after_seconds=30)
    return RolloutDriver(RolloutStore(database), store, SqsHostJobQueues(settings), settings)


async def _advance_until(
    database: Database, store: HostStore, service_id: str, done: Callable[[], bool], what: str
) -> None:
    """Advance the service's rollout until ``done()``. In a whole run the session's host worker drives the same
    rollouts: it may take a step first, or hold the service's lock while this one tries."""

    async def stepped() -> bool:
        await _driver(database, store).advance(service_id)
        return done()

    await wait_until_async(stepped, timeout=15, interval=0.2, message=f"the rollout did not {what}")


def _replicas(service_id: str) -> list[dict[str, Any]]:
    rows = _sql(
        "SELECT c.id, c.host_id, c.region, h.region FROM containers c JOIN hosts h ON h.id = c.host_id "
        "WHERE c.service_id = %s AND c.desired_state <> 'deleted' ORDER BY c.created_at",
        (service_id,),
    )
    return [{"id": str(row[0]), "host_id": row[1], "pinned": row[2], "region": row[3]} for row in rows]


async def test_a_service_keeps_its_minimum_in_each_region(
    api: httpx.AsyncClient,
    owner: dict[str, Any],
    regions: dict[str, Any],
    database: Database,
    store: HostStore,
) -> None:
    headers = owner["user"].headers
    a, b = regions["a"], regions["b"]
    declared = [{"name": a, "min": 1}, {"name": b, "min": 1}]
    # GIVEN a service of 3 replicas, at least 1 in region a and 1 in region b
    created = await api.post(
        "/api/services",
        json={"name": "geo", "image_id": owner["image_id"], "replicas": 3, "regions": declared},
        headers=headers,
    )
    assert created.status_code == 202, created.text
    assert created.json()["regions"] == declared and created.json()["replicas_by_region"] == []
    service_id = created.json()["id"]

    # WHEN the rollout driver places its replicas
    await _advance_until(database, store, service_id, lambda: len(_replicas(service_id)) == 3, "place 3 replicas")

    # THEN one is pinned to a (on a host of a), one to b (on b's host), and the third may go anywhere
    placed = _replicas(service_id)
    assert sorted(str(replica["pinned"]) for replica in placed) == sorted([a, b, "None"])
    assert all(replica["region"] == replica["pinned"] for replica in placed if replica["pinned"])
    assert next(r for r in placed if r["pinned"] == b)["host_id"] == regions["b1"]
    # AND the service answers its regions and its replicas per region (of their hosts)
    answer = (await api.get("/api/services/geo", headers=headers)).json()
    assert answer["regions"] == declared
    by_region = {entry["region"]: entry["total"] for entry in answer["replicas_by_region"]}
    assert sum(by_region.values()) == 3 and by_region[a] >= 1 and by_region[b] >= 1

    # WHEN it is scaled below the minimums THEN 409 (a conflict with its release's regions); to 2 THEN the
    # unpinned replica goes, the pinned ones stay
    below = await api.patch("/api/services/geo", json={"replicas": 1}, headers=headers)
    assert below.status_code == 409 and "regions" in below.text, below.text
    scaled = await api.patch("/api/services/geo", json={"replicas": 2}, headers=headers)
    assert scaled.status_code == 200, scaled.text
    unpinned = next(replica["id"] for replica in placed if replica["pinned"] is None)
    await _advance_until(database, store, service_id, lambda: len(_replicas(service_id)) == 2, "scale the service to 2")
    assert unpinned not in {replica["id"] for replica in _replicas(service_id)}
    assert sorted(replica["pinned"] for replica in _replicas(service_id)) == sorted([a, b])

    # WHEN the host of a's replica is lost THEN it moves to the other host of a, not to b
    pinned_a = next(replica for replica in placed if replica["pinned"] == a)
    other_a = regions["a2"] if pinned_a["host_id"] == regions["a1"] else regions["a1"]
    await go_silent(database, pinned_a["host_id"])
    await mark_stale_hosts_down(store, 30)
    settings = WorkerSettings(host_down_after_seconds=30)
    await reschedule_containers_of_down_hosts(store, SqsHostJobQueues(settings), settings)
    assert (await container(database, pinned_a["id"]))["host_id"] == other_a
    # AND when that host is lost too, it stays lost in a rather than run in b
    await go_silent(database, other_a)
    await mark_stale_hosts_down(store, 30)
    await reschedule_containers_of_down_hosts(store, SqsHostJobQueues(settings), settings)
    row = await container(database, pinned_a["id"])
    assert (row["host_id"], row["status"]) == (other_a, "lost")
    # AND the rollout driver does not make up for it elsewhere: the count stands, the pin is kept
    await _driver(database, store).advance(service_id)
    assert sorted(replica["pinned"] for replica in _replicas(service_id)) == sorted([a, b])


async def test_a_deploy_changes_the_regions_and_the_new_release_is_placed_by_them(
    api: httpx.AsyncClient,
    owner: dict[str, Any],
    regions: dict[str, Any],
    database: Database,
    store: HostStore,
) -> None:
    headers = owner["user"].headers
    a, b = regions["a"], regions["b"]
    body = {"name": "geo2", "image_id": owner["image_id"], "replicas": 2, "regions": [{"name": a, "min": 2}]}
    created = await api.post("/api/services", json=body, headers=headers)
    assert created.status_code == 202, created.text
    service_id = created.json()["id"]
    await _advance_until(database, store, service_id, lambda: len(_replicas(service_id)) == 2, "place 2 replicas")
    assert [replica["pinned"] for replica in _replicas(service_id)] == [a, a]
    _sql("UPDATE service_releases SET status = 'healthy' WHERE service_id = %s", (service_id,))
    # WHEN a deploy names minimums above the service's replicas THEN 409; an unknown region THEN 422
    too_many = await api.post(
        "/api/services/geo2/deploy", json={"regions": [{"name": a, "min": 1}, {"name": b, "min": 2}]}, headers=headers
    )
    assert too_many.status_code == 409, too_many.text
    unknown = await api.post(
        "/api/services/geo2/deploy", json={"regions": [{"name": "nowhere-x", "min": 1}]}, headers=headers
    )
    assert unknown.status_code == 422 and "nowhere-x" in unknown.text, unknown.text
    # WHEN (release 1 being healthy) a deploy moves one replica's minimum to b
    deployed = await api.post(
        "/api/services/geo2/deploy", json={"regions": [{"name": a, "min": 1}, {"name": b, "min": 1}]}, headers=headers
    )
    assert deployed.status_code == 202, deployed.text

    # THEN the old replicas (never ready) go, and the new release's are pinned one to a and one to b
    def release_2_placed() -> bool:
        return len(_sql("SELECT 1 FROM containers WHERE service_id = %s AND release_number = 2", (service_id,))) == 2

    await _advance_until(database, store, service_id, release_2_placed, "place release 2")
    new = _sql("SELECT region FROM containers WHERE service_id = %s AND release_number = 2", (service_id,))
    assert sorted(row[0] for row in new) == sorted([a, b])
    answer = (await api.get("/api/services/geo2", headers=headers)).json()
    assert answer["regions"] == [{"name": a, "min": 1}, {"name": b, "min": 1}]


@pytest.mark.parametrize(
    ("change", "status", "expected"),
    [
        ({"regions": [{"name": "no-such-region-x", "min": 1}]}, 422, "no-such-region-x"),
        ({"regions": [{"name": "{a}", "min": 2}, {"name": "{b}", "min": 2}], "replicas": 3}, 422, "minimums"),
        ({"regions": [{"name": "{a}", "min": 51}], "replicas": 51}, 403, "quota_exceeded"),
        ({"regions": [{"name": "{a}", "min": 1}, {"name": "{a}", "min": 1}]}, 422, "twice"),
        ({"regions": [{"name": "{a}", "min": 0}]}, 422, "min"),
        ({"regions": [{"name": "Not A Region", "min": 1}]}, 422, "name"),
    ],
    ids=["unknown", "above_replicas", "above_plan", "twice", "zero", "malformed"],
)
async def test_bad_regions_are_refused(
    api: httpx.AsyncClient,
    owner: dict[str, Any],
    regions: dict[str, Any],
    change: dict[str, Any],
    status: int,
    expected: str,
) -> None:
    named = [
        {"name": region["name"].format(a=regions["a"], b=regions["b"]), "min": region["min"]}
        for region in change["regions"]
    ]
    body = {"name": "bad", "image_id": owner["image_id"], "replicas": 3, **change, "regions": named}
    answer = await api.post("/api/services", json=body, headers=owner["user"].headers)
    assert answer.status_code == status, answer.text
    assert expected in answer.text
    assert (await api.get("/api/services/bad", headers=owner["user"].headers)).status_code == 404
