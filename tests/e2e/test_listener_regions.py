"""A listener's region policy through the gateway: set, read, changed and removed; a region no host belongs to
and a region named twice are refused (422). lb-runtime's side of the policy: tests/lb_runtime/test_regions.py."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest

from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_load_balancer_api import _replicas


@pytest.fixture
def user(client: httpx.Client) -> SignedInUser:
    return sign_up_and_in(client)


@pytest.fixture
def region(test_database: str) -> str:
    """A region with one registered host (removed after the test)."""
    name = f"r{uuid.uuid4().hex[:8]}"
    host_id = f"host-{name}"
    with psycopg.connect(test_database) as conn:
        conn.execute(
            "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb, status, heartbeat_at, region) "
            "VALUES (%s, '127.0.0.1', 1, 512, 'up', now(), %s)",
            (host_id, name),
        )
    yield name
    with psycopg.connect(test_database) as conn:
        conn.execute("DELETE FROM hosts WHERE id = %s", (host_id,))


def test_region_policy_round_trip(client: httpx.Client, user: SignedInUser, test_database: str, region: str) -> None:
    # GIVEN a service and a region with a host
    _replicas(test_database, user.id, "geo", 1)
    policy = {"order": [region], "routing": "client_region", "min_healthy": 2, "max_in_flight": 8}
    # WHEN a listener is created with a region policy
    created = client.post(
        "/api/load-balancer/listeners", json={"service": "geo", "regions": policy}, headers=user.auth_headers
    )
    # THEN it is answered back with its defaults filled in, and kept
    assert created.status_code == 201, created.text
    listener = created.json()
    assert listener["regions"] == policy | {"max_p95_ms": None}
    fetched = client.get(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers).json()
    assert fetched["regions"] == listener["regions"]
    with psycopg.connect(test_database) as conn:
        stored = conn.execute("SELECT regions FROM listeners WHERE id = %s", (listener["id"],)).fetchone()
    assert stored is not None and stored[0] == policy  # what lb-runtime's control-plane source reads
    # WHEN it is changed, then removed with null
    url = f"/api/load-balancer/listeners/{listener['id']}"
    changed = client.patch(url, json={"regions": {"order": [region], "max_p95_ms": 250}}, headers=user.auth_headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["regions"]["max_p95_ms"] == 250 and changed.json()["regions"]["routing"] == "local"
    removed = client.patch(url, json={"regions": None}, headers=user.auth_headers)
    assert removed.status_code == 200 and removed.json()["regions"] is None


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        ({"order": ["nowhere-at-all"]}, "nowhere-at-all"),  # no host belongs to it
        ({"order": ["Not A Region"]}, "region"),
        ({"order": ["{region}", "{region}"]}, "twice"),
        ({"routing": "nearest"}, "routing"),
        ({"min_healthy": 0}, "min_healthy"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_region_policies_are_refused(
    client: httpx.Client, user: SignedInUser, test_database: str, region: str, regions: dict, expected: str
) -> None:
    _replicas(test_database, user.id, "geo", 1)
    if "order" in regions:
        regions = {"order": [name.format(region=region) for name in regions["order"]]}
    answer = client.post(
        "/api/load-balancer/listeners", json={"service": "geo", "regions": regions}, headers=user.auth_headers
    )
    assert answer.status_code == 422, answer.text
    assert expected in answer.text
