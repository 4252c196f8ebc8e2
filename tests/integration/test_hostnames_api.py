"""Host names for the shared ports through the load-balancer function in-process, against the run's
PostgreSQL: a claim is proven by a DNS TXT record (asked of this test's own resolver, the small UDP DNS server
of tests/support/dns.py) or an HTTP token, a name belongs to one tenant only (409), and only a verified name
can be attached, to the caller's own http or https listener."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from functions.load_balancer import deps
from functions.load_balancer.app import app as lb_app
from functions.load_balancer.ownership import DnsHttpProof
from shared.config import get_function_settings
from tests.support.dns import LocalResolver
from tests.support.function_apps import client_of, verified_by_auth

HOSTNAMES = "/api/load-balancer/hostnames"


@dataclass
class Proof:
    """The function's ownership proof for this test: real DNS queries to the test's resolver, HTTP tokens from
    a table (``http[hostname, path] = body``)."""

    dns: DnsHttpProof
    http: dict[tuple[str, str], str]

    async def txt_records(self, name: str) -> list[str]:
        return await self.dns.txt_records(name)

    async def http_body(self, hostname: str, path: str) -> str | None:
        return self.http.get((hostname, path))


@dataclass
class User:
    id: str
    headers: dict[str, str]


def _sql(query: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(get_function_settings().database_url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
async def resolver() -> AsyncIterator[tuple[LocalResolver, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(LocalResolver, local_addr=("127.0.0.1", 0))
    yield protocol, transport.get_extra_info("sockname")[1]
    transport.close()


@pytest.fixture
async def world(resolver: tuple[LocalResolver, int]) -> AsyncIterator[dict[str, Any]]:
    """The function with the test's proof, two signed-in users each with an http and a tcp listener."""
    proof = Proof(DnsHttpProof(("127.0.0.1", resolver[1])), {})
    lb_app.dependency_overrides[deps._ownership] = lambda: proof
    users: list[User] = []
    listeners: dict[str, dict[str, str]] = {}
    async with verified_by_auth(lb_app) as auth, client_of(lb_app) as client:
        for _ in range(2):
            email = f"hostnames-{secrets.token_hex(6)}@example.com"
            password = "correct horse " + secrets.token_hex(4)
            created = await auth.post("/api/auth/signup", json={"email": email, "password": password})
            signed_in = await auth.post("/api/auth/signin", json={"email": email, "password": password})
            user = User(created.json()["id"], {"Authorization": f"Bearer {signed_in.json()['access_token']}"})
            users.append(user)
            listeners[user.id] = {}
            for protocol in ("http", "tcp"):
                row = _sql(
                    "INSERT INTO listeners (owner_id, service, port, protocol, algorithm) "
                    "VALUES (%s, 'web', %s, %s, 'round_robin') RETURNING id",
                    (user.id, random.randint(40000, 65000), protocol),
                )
                listeners[user.id][protocol] = str(row[0][0])
        yield {
            "api": client,
            "owner": users[0],
            "stranger": users[1],
            "listeners": listeners,
            "dns": resolver[0],
            "proof": proof,
        }
    lb_app.dependency_overrides.pop(deps._ownership, None)
    _sql("DELETE FROM users WHERE id = ANY(%s)", ([user.id for user in users],))


def _name() -> str:
    return f"shop-{secrets.token_hex(4)}.example"


async def test_a_dns_proof_verifies_and_the_name_is_then_one_tenants(world: dict[str, Any]) -> None:
    api, owner, stranger = world["api"], world["owner"], world["stranger"]
    name = _name()
    # GIVEN a claim, with its proof not published yet
    claim = (await api.post(HOSTNAMES, json={"hostname": name}, headers=owner.headers)).json()
    assert claim["status"] == "pending"
    verification = claim["verification"]
    assert verification["dns_txt_name"] == f"_berth-challenge.{name}"
    failed = await api.post(f"{HOSTNAMES}/{claim['id']}/verify", json={"method": "dns"}, headers=owner.headers)
    assert failed.status_code == 409 and failed.json()["error"]["code"] == "verification_failed"
    # WHEN the TXT record is published (in the test's resolver) and the claim verified
    world["dns"].records[verification["dns_txt_name"]] = ["unrelated", verification["dns_txt_value"]]
    verified = await api.post(f"{HOSTNAMES}/{claim['id']}/verify", json={"method": "dns"}, headers=owner.headers)
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "verified" and verified.json()["verified_by"] == "dns"
    # THEN nobody else can claim the name
    taken = await api.post(HOSTNAMES, json={"hostname": name}, headers=stranger.headers)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "hostname_taken"
    # AND another tenant's claim is a 404 to the owner
    assert (await api.get(f"{HOSTNAMES}/{claim['id']}", headers=stranger.headers)).status_code == 404


async def test_the_first_verified_of_two_pending_claims_wins(world: dict[str, Any]) -> None:
    api, owner, stranger = world["api"], world["owner"], world["stranger"]
    name = _name()
    mine = (await api.post(HOSTNAMES, json={"hostname": name}, headers=owner.headers)).json()
    theirs = (await api.post(HOSTNAMES, json={"hostname": name}, headers=stranger.headers)).json()
    # both publish an HTTP token; the owner verifies first
    for claim in (mine, theirs):
        path = claim["verification"]["http_url"].removeprefix(f"http://{name}")
        world["proof"].http[(name, path)] = claim["verification"]["http_body"]
    first = await api.post(f"{HOSTNAMES}/{mine['id']}/verify", json={"method": "http"}, headers=owner.headers)
    assert first.status_code == 200 and first.json()["verified_by"] == "http"
    second = await api.post(f"{HOSTNAMES}/{theirs['id']}/verify", json={"method": "http"}, headers=stranger.headers)
    assert second.status_code == 409 and second.json()["error"]["code"] == "hostname_taken"


async def test_only_a_verified_name_routes_and_only_to_its_owners_http_listener(world: dict[str, Any]) -> None:
    api, owner, stranger, listeners = world["api"], world["owner"], world["stranger"], world["listeners"]
    name = _name()
    claim = (await api.post(HOSTNAMES, json={"hostname": name}, headers=owner.headers)).json()
    path = f"{HOSTNAMES}/{claim['id']}"
    http_listener = listeners[owner.id]["http"]
    # not verified yet: 409
    early = await api.patch(path, json={"listener_id": http_listener}, headers=owner.headers)
    assert early.status_code == 409 and early.json()["error"]["code"] == "hostname_not_verified"
    world["dns"].records[claim["verification"]["dns_txt_name"]] = [claim["verification"]["dns_txt_value"]]
    assert (await api.post(f"{path}/verify", json={"method": "dns"}, headers=owner.headers)).status_code == 200
    # another tenant's listener is not found (404, as every other tenant's resource); a tcp one: 409
    for listener_id, status in ((listeners[stranger.id]["http"], 404), (listeners[owner.id]["tcp"], 409)):
        refused = await api.patch(path, json={"listener_id": listener_id}, headers=owner.headers)
        assert refused.status_code == status, refused.text
    # the owner's http listener: routed
    attached = await api.patch(path, json={"listener_id": http_listener}, headers=owner.headers)
    assert attached.status_code == 200 and attached.json()["listener_id"] == http_listener
    listed = (await api.get(HOSTNAMES, headers=owner.headers)).json()["items"]
    assert [(item["hostname"], item["listener_id"]) for item in listed] == [(name, http_listener)]
    assert (await api.delete(path, headers=owner.headers)).status_code == 204
