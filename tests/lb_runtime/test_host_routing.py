"""Shared ports: a listener routes each request by its Host to the route (one tenant's service) that has that
host name; an unknown host is a 404 and a connection never switches hosts (421), so no request reaches a
service under another tenant's name; an http listener can redirect everything to https."""

from __future__ import annotations

import asyncio

import httpx

from tests.lb_runtime.support import listener, running_lb
from tests.lb_runtime.test_https import client_context, https_get
from tests.support.certificates import CertificateAuthority, make_ca


def shared(routes: list[dict], **extra: object) -> dict:
    return listener("shared", [], routes=routes) | extra


def route(route_id: str, host: str, *instances: dict, **extra: object) -> dict:
    return {"id": route_id, "host": host, "instances": list(instances)} | extra


def certificate(ca: CertificateAuthority, certificate_id: str, *hosts: str) -> dict:
    chain, key = ca.issue(*hosts)
    return {"id": certificate_id, "chain_pem": chain, "key_pem": key}


async def test_each_host_goes_to_its_own_service(http_backends) -> None:
    # GIVEN two tenants' services behind one port, by host name
    a, b = await http_backends("a"), await http_backends("b")
    snapshot = {"listeners": [shared([route("r-a", "a.example", a.instance), route("r-b", "b.example", b.instance)])]}
    async with running_lb(snapshot) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('shared')}/"
        # WHEN requests name each host (any case, with a port), and one names a host nobody has
        async with httpx.AsyncClient() as client:
            to_a = await client.get(url, headers={"Host": "A.Example:8080"})
        async with httpx.AsyncClient() as client:
            to_b = await client.get(url, headers={"Host": "b.example"})
        async with httpx.AsyncClient() as client:
            unknown = await client.get(url, headers={"Host": "c.example"})
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"http://127.0.0.1:{runtime.admin_port}/stats")).json()
    # THEN each reaches only its own service, and the unknown host reaches none
    assert (to_a.status_code, to_a.text) == (200, "a")
    assert (to_b.status_code, to_b.text) == (200, "b")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_host"
    assert (a.requests, b.requests) == (1, 1)
    # AND each route has its own figures
    figures = {entry["id"]: entry["requests"] for entry in stats["listeners"]}
    assert figures["r-a"] == 1 and figures["r-b"] == 1


async def test_a_connection_never_switches_hosts(http_backends) -> None:
    a, b = await http_backends("a"), await http_backends("b")
    snapshot = {"listeners": [shared([route("r-a", "a.example", a.instance), route("r-b", "b.example", b.instance)])]}
    async with running_lb(snapshot) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('shared')}/"
        async with httpx.AsyncClient() as client:
            # WHEN one keep-alive connection first asks for a.example, then for b.example
            first = await client.get(url, headers={"Host": "a.example"})
            second = await client.get(url, headers={"Host": "b.example"})
    # THEN the second is refused (421) and never reaches b's service
    assert first.text == "a"
    assert second.status_code == 421 and second.json()["error"]["code"] == "misdirected_request"
    assert b.requests == 0


async def test_routes_follow_the_snapshot(http_backends) -> None:
    a, b = await http_backends("a"), await http_backends("b")
    snapshot = {"listeners": [shared([route("r-a", "a.example", a.instance)])]}
    async with running_lb(snapshot) as (runtime, source):
        port = runtime.listener_port("shared")
        url = f"http://127.0.0.1:{port}/"
        # WHEN the host moves from one service to another (released, then claimed by someone else)
        source.set({"listeners": [shared([route("r-b", "a.example", b.instance)], port=port)]})
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as client:
            moved = await client.get(url, headers={"Host": "a.example"})
        # WHEN every route is gone
        source.set({"listeners": [shared([], port=port)]})
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as client:
            gone = await client.get(url, headers={"Host": "a.example"})
    assert moved.text == "b" and a.requests == 0
    assert gone.status_code in (404, 503)


async def test_health_checks_run_per_route(http_backends) -> None:
    a = await http_backends("a")
    a.health_status = 503
    check = {"path": "/healthz", "interval_seconds": 0.1, "healthy_threshold": 1, "unhealthy_threshold": 1}
    snapshot = {"listeners": [shared([route("r-a", "a.example", a.instance, health_check=check)])]}
    async with running_lb(snapshot) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('shared')}/"
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as client:
            refused = await client.get(url, headers={"Host": "a.example"})
        a.health_status = 200
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as client:
            served = await client.get(url, headers={"Host": "a.example"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_healthy_instance"
    assert served.status_code == 200 and a.health_checks >= 2


async def test_an_http_listener_redirects_to_https() -> None:
    async with running_lb({"listeners": [listener("plain", [], redirect_https_port=20443)]}) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('plain')}/cart?item=1"
        async with httpx.AsyncClient() as client:
            answer = await client.get(url, headers={"Host": "shop.example:8080"})
    assert answer.status_code == 308
    assert answer.headers["location"] == "https://shop.example:20443/cart?item=1"


async def test_a_shared_https_port_picks_certificate_and_route_by_name(http_backends) -> None:
    # GIVEN two tenants' https routes on one port, each with its own certificate
    ca = make_ca()
    a, b = await http_backends("a"), await http_backends("b")
    routes = [
        route("r-a", "a.example", a.instance, certificates=[certificate(ca, "ca", "a.example")]),
        route("r-b", "b.example", b.instance, certificates=[certificate(ca, "cb", "b.example")]),
    ]
    async with running_lb({"listeners": [shared(routes, protocol="https")]}) as (runtime, _):
        port = runtime.listener_port("shared")
        to_a = await https_get(port, "a.example", client_context(ca))
        to_b = await https_get(port, "b.example", client_context(ca))
    # THEN each host gets its own certificate and its own service
    assert (to_a["names"], to_a["body"]) == (["a.example"], b"a")
    assert (to_b["names"], to_b["body"]) == (["b.example"], b"b")


async def test_a_host_is_never_given_another_routes_certificate(http_backends) -> None:
    # GIVEN b's route first, with a certificate that names a's host too (names in a certificate prove nothing)
    ca = make_ca()
    a, b = await http_backends("a"), await http_backends("b")
    routes = [
        route("r-b", "b.example", b.instance, certificates=[certificate(ca, "cb", "b.example", "a.example")]),
        route("r-a", "a.example", a.instance, certificates=[certificate(ca, "ca", "a.example")]),
    ]
    async with running_lb({"listeners": [shared(routes, protocol="https")]}) as (runtime, _):
        port = runtime.listener_port("shared")
        to_a = await https_get(port, "a.example", client_context(ca))
        to_b = await https_get(port, "b.example", client_context(ca))
    # THEN a's host gets a's own certificate, and b's its own
    assert (to_a["names"], to_a["body"]) == (["a.example"], b"a")
    assert (to_b["names"], to_b["body"]) == (["b.example", "a.example"], b"b")


async def test_a_route_can_send_its_host_to_https(http_backends) -> None:
    # GIVEN an https site's host on the shared http port (redirect) next to a plain http site
    b = await http_backends("b")
    routes = [route("r-a", "a.example", redirect_https_port=443), route("r-b", "b.example", b.instance)]
    async with running_lb({"listeners": [shared(routes)]}) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('shared')}/login"
        async with httpx.AsyncClient() as client:
            redirected = await client.get(url, headers={"Host": "a.example"})
        async with httpx.AsyncClient() as client:
            served = await client.get(url, headers={"Host": "b.example"})
    # THEN the first is sent to https (no port for 443) and the second is served
    assert redirected.status_code == 308 and redirected.headers["location"] == "https://a.example/login"
    assert served.status_code == 200 and served.text == "b"


def test_the_control_plane_builds_the_shared_ports_from_verified_names() -> None:
    # GIVEN an http and an https tenant listener, each with a verified name attached
    from lb_runtime import build_route_table
    from lb_runtime.control_plane import ControlPlaneSource

    ca = make_ca()
    chain, key = ca.issue("shop.example")
    instance = {"id": "c-1", "address": "127.0.0.1", "port": 31001, "weight": 1}
    tenant_http = {"id": "l-1", "port": 20001, "protocol": "http", "algorithm": "round_robin", "health_check": None}
    tenant_https = tenant_http | {"id": "l-2", "port": 20002, "protocol": "https"}
    tenant_https["certificates"] = [{"id": "cert", "chain_pem": chain, "key_pem": key}]
    listeners = [tenant_http | {"instances": [instance]}, tenant_https | {"instances": [instance]}]
    names = [{"hostname": "blog.example", "listener_id": "l-1"}, {"hostname": "shop.example", "listener_id": "l-2"}]
    source = ControlPlaneSource("postgresql://unused", registry=None, shared_ports=(20080, 20443))  # type: ignore[arg-type]
    # WHEN the shared listeners are built
    shared = source._shared_listeners(listeners, names)
    table = build_route_table({"listeners": listeners + shared})
    # THEN the http name routes on the shared http port, the https one on the shared https port (with its
    # certificate) and is redirected there from http
    http_routes = {route.host: route for route in table.listeners["shared-http"].routes}
    https_routes = {route.host: route for route in table.listeners["shared-https"].routes}
    assert [instance.id for instance in http_routes["blog.example"].instances] == ["c-1"]
    assert http_routes["shop.example"].redirect_https_port == 20443
    assert https_routes["shop.example"].certificates[0].hostnames == ("shop.example",)
    assert "blog.example" not in https_routes
