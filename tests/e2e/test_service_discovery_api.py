"""Service discovery through the gateway: a user reads the services of their own containers with each
instance's health; nobody sees another tenant's services; the platform's own services are visible to
admins only. Instances are registered straight into the PostgreSQL registry, as a host worker does."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest

from shared.registry import HealthCheck, HealthStatus, Instance, Namespace
from shared.registry.postgres import PostgresRegistry
from tests.e2e.conftest import SignedInUser, sign_up_and_in


@pytest.fixture
def registry(test_database: str) -> PostgresRegistry:
    return PostgresRegistry(test_database)


def _client_instance(owner: str, service: str, port: int, **fields: object) -> Instance:
    return Instance(
        id=str(uuid.uuid4()),
        namespace=Namespace.CLIENT_CONTAINERS,
        service=service,
        owner_id=uuid.UUID(owner),
        address="127.0.0.1",
        port=port,
        **fields,
    )


def _make_admin(client: httpx.Client, database_url: str) -> SignedInUser:
    user = sign_up_and_in(client)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE users SET role = 'admin' WHERE id = %s", (user.id,))
    # The role is a claim of the access token: sign in again to carry it.
    return sign_up_and_in_again(client, user)


def sign_up_and_in_again(client: httpx.Client, user: SignedInUser) -> SignedInUser:
    tokens = client.post("/api/auth/signin", json={"email": user.email, "password": user.password}).json()
    return SignedInUser(user.id, user.email, user.password, tokens["access_token"], tokens["refresh_token"])


async def test_a_user_sees_their_services_with_health(client: httpx.Client, registry: PostgresRegistry) -> None:
    user = sign_up_and_in(client)
    check = HealthCheck(type="http", path="/healthz", interval_seconds=5, timeout_seconds=1)
    healthy = await registry.register(_client_instance(user.id, "web", 30001, status=HealthStatus.PASSING))
    failing = await registry.register(_client_instance(user.id, "web", 30002, check=check))
    await registry.report_health(Namespace.CLIENT_CONTAINERS, failing.id, HealthStatus.CRITICAL, "HTTP 500")
    await registry.register(_client_instance(user.id, "worker", 30003))

    namespaces = client.get("/api/service-discovery/namespaces", headers=user.auth_headers)
    assert namespaces.status_code == 200, namespaces.text
    assert [(n["name"], n["services"]) for n in namespaces.json()["items"]] == [("client-containers", 2)]

    listed = client.get("/api/service-discovery/services", headers=user.auth_headers).json()
    assert sorted(item["name"] for item in listed["items"]) == ["web", "worker"]

    web = client.get("/api/service-discovery/services/web", headers=user.auth_headers)
    assert web.status_code == 200, web.text
    body = web.json()
    assert body["name"] == "web" and body["namespace"] == "client-containers"
    statuses = {instance["id"]: (instance["port"], instance["status"]) for instance in body["instances"]}
    assert statuses == {healthy.id: (30001, "passing"), failing.id: (30002, "critical")}
    assert next(i for i in body["instances"] if i["id"] == failing.id)["output"] == "HTTP 500"


async def test_tenants_never_see_each_other(client: httpx.Client, registry: PostgresRegistry) -> None:
    owner = sign_up_and_in(client)
    stranger = sign_up_and_in(client)
    await registry.register(_client_instance(owner.id, "secret-svc", 30010))
    assert client.get("/api/service-discovery/services", headers=stranger.auth_headers).json()["items"] == []
    answer = client.get("/api/service-discovery/services/secret-svc", headers=stranger.auth_headers)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    # A service of the same name of the stranger's own shows only the stranger's instance.
    mine = await registry.register(_client_instance(stranger.id, "secret-svc", 30011))
    seen = client.get("/api/service-discovery/services/secret-svc", headers=stranger.auth_headers).json()
    assert [i["id"] for i in seen["instances"]] == [mine.id]


async def test_internal_services_are_for_admins_only(
    client: httpx.Client, registry: PostgresRegistry, test_database: str
) -> None:
    internal = await registry.register(
        Instance(
            id=f"worker-{uuid.uuid4().hex[:8]}",
            namespace=Namespace.INTERNAL_SERVICES,
            service="host-worker",
            address="10.0.0.5",
            port=9100,
        )
    )
    user = sign_up_and_in(client)
    for path in ("/api/service-discovery/services", "/api/service-discovery/services/host-worker"):
        refused = client.get(path, params={"namespace": "internal-services"}, headers=user.auth_headers)
        assert refused.status_code == 404, refused.text
    names = [
        n["name"] for n in client.get("/api/service-discovery/namespaces", headers=user.auth_headers).json()["items"]
    ]
    assert names == ["client-containers"]

    admin = _make_admin(client, test_database)
    names = [
        n["name"] for n in client.get("/api/service-discovery/namespaces", headers=admin.auth_headers).json()["items"]
    ]
    assert names == ["client-containers", "internal-services"]
    seen = client.get(
        "/api/service-discovery/services/host-worker",
        params={"namespace": "internal-services"},
        headers=admin.auth_headers,
    )
    assert seen.status_code == 200, seen.text
    assert internal.id in [i["id"] for i in seen.json()["instances"]]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/service-discovery/services", {"namespace": "nope"}),
        ("/api/service-discovery/services/UPPER", {}),
        ("/api/service-discovery/services/" + "a" * 80, {}),
        ("/api/service-discovery/services/missing", {}),
    ],
)
def test_unknown_namespaces_and_services_are_404(
    client: httpx.Client, signed_in_user: SignedInUser, path: str, params: dict[str, str]
) -> None:
    answer = client.get(path, params=params, headers=signed_in_user.auth_headers)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["message"]


def test_discovery_needs_a_token(client: httpx.Client) -> None:
    assert client.get("/api/service-discovery/namespaces").status_code == 401
