"""Listeners through the gateway: a user puts an external port in front of their service, reads, changes and
deletes it; ports are never given twice; other tenants see nothing; bad input is a clear 4xx.

The service's replicas are container records written straight into PostgreSQL (the orchestrator's own tests
run real containers): the load-balancer function only needs to know which services and replicas exist."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.conftest import LISTENER_PORTS
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.support.plans import move_to_plan

# Stands for the id of the service's first replica in the bad-input cases.
FIRST_REPLICA = "first-replica"


def _replicas(database_url: str, owner: str, service: str, count: int) -> list[str]:
    """``count`` running container records of ``owner`` in ``service``; their ids."""
    with psycopg.connect(database_url) as conn:
        image = conn.execute(
            "INSERT INTO images (owner_id, name, tag, status, object_key) VALUES (%s, %s, '1', 'ready', 'k') "
            "ON CONFLICT (owner_id, name, tag) DO UPDATE SET status = 'ready' RETURNING id",
            (owner, f"img-{service}"),
        ).fetchone()
        assert image is not None
        ids = []
        for index in range(count):
            row = conn.execute(
                "INSERT INTO containers (owner_id, image_id, name, service, cpu, memory_mb, status) "
                "VALUES (%s, %s, %s, %s, 0.5, 64, 'running') RETURNING id",
                (owner, image[0], f"{service}-{index}-{uuid.uuid4().hex[:6]}", service),
            ).fetchone()
            assert row is not None
            ids.append(str(row[0]))
    return ids


@pytest.fixture
def user(client: httpx.Client) -> SignedInUser:
    return sign_up_and_in(client)


def _error(answer: httpx.Response, status: int) -> dict[str, str]:
    assert answer.status_code == status, answer.text
    body = answer.json()["error"]
    assert body["code"] and body["message"] and body["request_id"]
    return body


def test_create_read_update_delete(client: httpx.Client, user: SignedInUser, test_database: str) -> None:
    ids = _replicas(test_database, user.id, "web", 2)
    created = client.post(
        "/api/load-balancer/listeners",
        json={"service": "web", "protocol": "http", "algorithm": "weighted", "weights": {ids[0]: 3, ids[1]: 1}},
        headers=user.auth_headers,
    )
    assert created.status_code == 201, created.text
    listener = created.json()
    assert LISTENER_PORTS[0] <= listener["port"] <= LISTENER_PORTS[1]
    assert listener["address"] == "127.0.0.1"
    assert listener["weights"] == {ids[0]: 3, ids[1]: 1}
    assert listener["algorithm"] == "weighted" and listener["health_check"] is None

    fetched = client.get(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers)
    assert fetched.status_code == 200 and fetched.json() == listener
    listed = client.get("/api/load-balancer/listeners", headers=user.auth_headers).json()
    assert [item["id"] for item in listed["items"]] == [listener["id"]]

    patched = client.patch(
        f"/api/load-balancer/listeners/{listener['id']}",
        json={"algorithm": "least_connections", "health_check": {"type": "http", "path": "/healthz"}},
        headers=user.auth_headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["algorithm"] == "least_connections"
    assert patched.json()["health_check"]["path"] == "/healthz"
    assert patched.json()["port"] == listener["port"]  # untouched fields keep their values
    # null is refused for the fields that have no "none" (the document says so), and changes nothing
    path = f"/api/load-balancer/listeners/{listener['id']}"
    for field in ("port", "algorithm", "weights"):
        _error(client.patch(path, json={field: None}, headers=user.auth_headers), 422)
    assert client.get(path, headers=user.auth_headers).json()["weights"] == {ids[0]: 3, ids[1]: 1}

    removed = client.delete(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers)
    assert removed.status_code == 204
    _error(client.get(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers), 404)


def test_requested_port_is_never_given_twice(client: httpx.Client, user: SignedInUser, test_database: str) -> None:
    _replicas(test_database, user.id, "api", 1)
    other = sign_up_and_in(client)
    _replicas(test_database, other.id, "api", 1)
    port = LISTENER_PORTS[0] + uuid.uuid4().int % (LISTENER_PORTS[1] - LISTENER_PORTS[0])
    first = client.post(
        "/api/load-balancer/listeners", json={"service": "api", "port": port}, headers=user.auth_headers
    )
    assert first.status_code == 201, first.text
    taken = client.post(
        "/api/load-balancer/listeners", json={"service": "api", "port": port}, headers=other.auth_headers
    )
    assert _error(taken, 409)["code"] == "port_taken"
    assert str(port) in taken.json()["error"]["message"]


def test_concurrent_allocations_get_distinct_ports(
    client: httpx.Client, user: SignedInUser, test_database: str
) -> None:
    _replicas(test_database, user.id, "many", 1)
    # Twenty listeners is a team's scenario: the free plan allows one.
    tokens = move_to_plan(client, test_database, user.id, "team", email=user.email, password=user.password)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    def create(_: int) -> int:
        answer = client.post("/api/load-balancer/listeners", json={"service": "many"}, headers=headers)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["port"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        ports = list(pool.map(create, range(20)))
    assert len(set(ports)) == 20


def test_other_tenants_see_nothing(client: httpx.Client, user: SignedInUser, test_database: str) -> None:
    _replicas(test_database, user.id, "private", 1)
    listener = client.post(
        "/api/load-balancer/listeners", json={"service": "private"}, headers=user.auth_headers
    ).json()
    stranger = sign_up_and_in(client)
    path = f"/api/load-balancer/listeners/{listener['id']}"
    _error(client.get(path, headers=stranger.auth_headers), 404)
    _error(client.patch(path, json={"algorithm": "round_robin"}, headers=stranger.auth_headers), 404)
    _error(client.delete(path, headers=stranger.auth_headers), 404)
    _error(client.get(path + "/stats", headers=stranger.auth_headers), 404)
    assert client.get("/api/load-balancer/listeners", headers=stranger.auth_headers).json()["items"] == []
    # Nor can a stranger put a listener in front of the user's service.
    _error(client.post("/api/load-balancer/listeners", json={"service": "private"}, headers=stranger.auth_headers), 404)
    assert client.get(path, headers=user.auth_headers).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"service": "web", "algorithm": "random"}, 422),
        ({"service": "web", "protocol": "udp"}, 422),
        ({"service": "web", "weights": {FIRST_REPLICA: -1}}, 422),
        ({"service": "web", "weights": {FIRST_REPLICA: 1.5}}, 422),
        ({"service": "web", "weights": {FIRST_REPLICA: True}}, 422),
        ({"service": "web", "weights": {str(uuid.uuid4()): 2}}, 422),
        ({"service": "web", "port": 80}, 422),
        ({"service": "web", "port": 70000}, 422),
        ({"service": "Not A Service"}, 422),
        ({"service": "missing"}, 404),
        ({"service": "web", "colour": "blue"}, 422),
        ({"service": "web", "health_check": {"type": "http", "path": "no-slash"}}, 422),
        ({"service": "web", "health_check": {"interval_seconds": 2, "timeout_seconds": 5}}, 422),
    ],
)
def test_bad_input_is_a_clear_4xx(
    client: httpx.Client, user: SignedInUser, test_database: str, body: dict[str, object], status: int
) -> None:
    ids = _replicas(test_database, user.id, "web", 1)
    weights = body.get("weights")
    if isinstance(weights, dict):
        body = {**body, "weights": {ids[0] if key == FIRST_REPLICA else key: value for key, value in weights.items()}}
    _error(client.post("/api/load-balancer/listeners", json=body, headers=user.auth_headers), status)
