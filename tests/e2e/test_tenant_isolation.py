"""Tenant isolation and private networking end to end (issue 11), through the gateway with the real worker.

Two tenants deploy the "web" test image. Each tenant's containers join only that tenant's bridge network on the
host; tenant A's containers cannot open a TCP connection to tenant B's (by IP, by name, through the host's
addresses or a port B publishes on one), but reach A's own services by ``<service>.internal``, which the
worker's internal DNS answers from the registry, live. Commands run inside the customer containers with
busybox (``docker exec``): ``nc`` for TCP, ``nslookup`` through Docker's embedded resolver.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import RUN_ID, RunningGateway, RunningLb
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.e2e.test_traffic import Stream, _listener, _routed, _wait_for_status
from tests.support.docker_containers import remove_labelled
from tests.support.docker_images import build_test_image, save_image
from tests.support.plans import move_to_plan
from tests.support.waiting import wait_until
from worker.container_runtime import CONTAINER_ID_LABEL, OWNER_LABEL
from worker.tenant_networks import LEGACY_CUSTOMER_NETWORK, TENANT_NETWORK_PREFIX

pytestmark = pytest.mark.docker

BLOCKED_WITHIN_SECONDS = 3


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-tenancy"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("web") / "web.tar")
    docker_client.images.remove(tag)
    yield path


@dataclass
class Tenant:
    user: SignedInUser
    image_id: str
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> container answer

    def docker_id(self, name: str) -> str:
        return str(self.containers[name]["docker_id"])


def deploy(client: httpx.Client, tenant: Tenant, name: str, service: str, **extra: Any) -> dict[str, Any]:
    body = {"image_id": tenant.image_id, "name": name, "service": service, "ports": [{"container_port": 8080}]}

    def created() -> httpx.Response | None:
        answer = client.post("/api/containers", json={**body, **extra}, headers=tenant.user.auth_headers)
        return None if answer.status_code == 503 else answer  # 503 until the session worker registers its host

    answer = wait_until(created, timeout=30, interval=0.5, message="no host took the container")
    assert answer.status_code == 202, answer.text
    return answer.json()


def running(client: httpx.Client, tenant: Tenant, container_id: str, docker_client: docker.DockerClient) -> dict:
    found = _wait_for_status(client, tenant.user, container_id, "running")
    docker_id = wait_until(
        lambda: next(
            iter(docker_client.api.containers(filters={"label": f"{CONTAINER_ID_LABEL}={container_id}"})), None
        ),
        message="no Docker container for the record",
    )["Id"]
    return {**found, "docker_id": docker_id}


@pytest.fixture(scope="module")
def tenants(
    gateway: RunningGateway,
    worker: Any,
    lb_runtime: RunningLb,
    web_archive: Path,
    docker_client: docker.DockerClient,
    test_database: str,
) -> Iterator[tuple[Tenant, Tenant]]:
    """A with two replicas of "api" and one "front" (where A's commands run); B with one "secret"."""
    made: list[Tenant] = []
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for _ in range(2):
                user = sign_up_and_in(client)
                image = upload_and_process(client, user, "web", web_archive)
                assert image["status"] == "ready", image
                made.append(Tenant(user, image["id"]))
            a, b = made
            # A runs four containers over the module (a new replica joins later): more than the free plan's 3.
            move_to_plan(client, test_database, a.user.id, "pro", email=a.user.email, password=a.user.password)
            for tenant, name, service in ((a, "api-0", "api"), (a, "api-1", "api"), (a, "front", "front")):
                tenant.containers[name] = deploy(client, tenant, name, service)
            b.containers["secret-0"] = deploy(client, b, "secret-0", "secret")
            for tenant in made:
                for name, container in tenant.containers.items():
                    tenant.containers[name] = running(client, tenant, container["id"], docker_client)
        yield a, b
    finally:
        for tenant in made:
            remove_labelled(docker_client, OWNER_LABEL, tenant.user.id)


def sh(docker_client: docker.DockerClient, docker_id: str, command: str) -> str:
    """Run ``command`` with busybox sh inside a customer container; its output (stdout and stderr)."""
    result = docker_client.api.exec_create(docker_id, ["sh", "-c", command], user="")
    output: bytes = docker_client.api.exec_start(result["Id"])
    return output.decode(errors="replace")


def tcp_from(docker_client: docker.DockerClient, docker_id: str, host: str, port: int) -> tuple[bool, float, str]:
    """Whether an HTTP GET over TCP from inside the container got an answer, how long it took, the output."""
    started = time.monotonic()
    output = sh(
        docker_client,
        docker_id,
        f"printf 'GET /cgi-bin/whoami HTTP/1.0\\r\\n\\r\\n' | nc -w {BLOCKED_WITHIN_SECONDS} {host} {port} 2>&1",
    )
    return "HTTP/1." in output, time.monotonic() - started, output


def lookup(docker_client: docker.DockerClient, docker_id: str, name: str, record: str = "a") -> tuple[list[str], str]:
    """The addresses ``nslookup`` finds for ``name`` inside the container (through Docker's resolver)."""
    output = sh(docker_client, docker_id, f"nslookup -type={record} {name} 2>&1")
    answers = output.split("Name:", 1)[1] if "Name:" in output else ""
    return sorted(re.findall(r"Address:\s*(\d+\.\d+\.\d+\.\d+)", answers)), output


def network_of(docker_client: docker.DockerClient, docker_id: str) -> dict[str, dict[str, Any]]:
    return dict(docker_client.api.inspect_container(docker_id)["NetworkSettings"]["Networks"])


def gateway_of(docker_client: docker.DockerClient, network: str) -> str:
    return str(docker_client.api.inspect_network(network)["IPAM"]["Config"][0]["Gateway"])


@contextlib.contextmanager
def host_listeners(addresses: list[str]) -> Iterator[int]:
    """A TCP listener on one port of each given host address (answering HTTP), for the test's length."""
    sockets = []
    port = 0
    for address in addresses:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        port = sock.getsockname()[1]
        sock.listen(8)
        sock.settimeout(0.2)
        sockets.append(sock)
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                conn.recv(4096)  # the request first: closing with it unread would reset the connection
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhost\n")

    threads = [threading.Thread(target=serve, args=(sock,), daemon=True) for sock in sockets]
    for thread in threads:
        thread.start()
    try:
        yield port
    finally:
        stop.set()
        for sock in sockets:
            sock.close()


# ---------------------------------------------------------------------------------------------- isolation


def test_each_tenant_has_its_own_bridge_network(tenants: tuple[Tenant, Tenant], docker_client: Any) -> None:
    a, b = tenants
    a_networks = {name for c in a.containers for name in network_of(docker_client, a.docker_id(c))}
    b_networks = set(network_of(docker_client, b.docker_id("secret-0")))
    assert len(a_networks) == 1 and len(b_networks) == 1 and a_networks != b_networks
    for network, owner in ((a_networks.pop(), a), (b_networks.pop(), b)):
        assert network.startswith(TENANT_NETWORK_PREFIX)
        details = docker_client.api.inspect_network(network)
        assert details["Labels"]["berth.network"] == "tenant" and details["Labels"]["berth.owner"] == owner.user.id
        assert details["Options"]["com.docker.network.bridge.name"].startswith("bt")
    # The hardening stays: no capability at all (NET_RAW included), bounding set empty too.
    status = sh(docker_client, a.docker_id("front"), "grep -E '^Cap(Eff|Bnd)' /proc/self/status")
    assert re.findall(r"Cap(?:Eff|Bnd):\s*([0-9a-f]+)", status) == ["0" * 16, "0" * 16], status


def test_tenant_a_cannot_reach_tenant_b(tenants: tuple[Tenant, Tenant], docker_client: Any) -> None:
    a, b = tenants
    front = a.docker_id("front")
    b_network, b_settings = next(iter(network_of(docker_client, b.docker_id("secret-0")).items()))
    a_network = next(iter(network_of(docker_client, front)))
    a_gateway, b_gateway = gateway_of(docker_client, a_network), gateway_of(docker_client, b_network)

    # GIVEN A reaches its own replica by address (the check below can tell reachable from not)
    own = next(iter(network_of(docker_client, a.docker_id("api-0")).values()))["IPAddress"]
    assert tcp_from(docker_client, front, own, 8080)[0]

    # WHEN A tries B's container by its address, THEN no connection within 3 s
    reached, seconds, output = tcp_from(docker_client, front, b_settings["IPAddress"], 8080)
    assert not reached and seconds < BLOCKED_WITHIN_SECONDS + 2, output

    # ... nor by B's service or container names (unknown to A)
    for name in ("secret.internal", "secret-0.secret.internal", f"berth-{b.containers['secret-0']['id']}"):
        reached, _, output = tcp_from(docker_client, front, name, 8080)
        assert not reached, output

    # ... nor through a port B publishes on a non-loopback host address (B's gateway IP)
    image = docker_client.api.inspect_container(b.docker_id("secret-0"))["Config"]["Image"]
    published = docker_client.containers.run(
        image,
        detach=True,
        network=b_network,
        ports={"8080/tcp": (b_gateway, None)},
        labels={OWNER_LABEL: b.user.id},
        cap_drop=["ALL"],
    )
    try:
        published.reload()
        host_port = int(published.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
        # (the port answers: from the host itself)
        wait_until(
            lambda: httpx.get(f"http://{b_gateway}:{host_port}/", timeout=2).status_code == 200,
            ignoring=(httpx.HTTPError,),
        )
        reached, seconds, output = tcp_from(docker_client, front, b_gateway, host_port)
        assert not reached and seconds < BLOCKED_WITHIN_SECONDS + 2, output
    finally:
        published.remove(force=True)

    # ... nor any service of the host on the bridges' gateway addresses (its own, B's, Docker's default)
    with host_listeners([a_gateway, b_gateway]) as port:
        assert httpx.get(f"http://{a_gateway}:{port}/", timeout=2).status_code == 200  # the host listens
        for address in (a_gateway, b_gateway):
            reached, seconds, output = tcp_from(docker_client, front, address, port)
            assert not reached and seconds < BLOCKED_WITHIN_SECONDS + 2, (address, output)


def test_own_services_resolve_and_answer_and_other_tenants_names_are_nxdomain(
    tenants: tuple[Tenant, Tenant], docker_client: Any
) -> None:
    a, b = tenants
    front = a.docker_id("front")
    replicas = sorted(
        next(iter(network_of(docker_client, a.docker_id(name)).values()))["IPAddress"] for name in ("api-0", "api-1")
    )
    # A's api.internal: both replicas' tenant-network addresses
    assert wait_until(lambda: lookup(docker_client, front, "api.internal")[0] == replicas, timeout=5)
    # one replica by name, and SRV with the container port
    assert lookup(docker_client, front, "api-1.api.internal")[0] == replicas[1:] or replicas[:1]
    srv = sh(docker_client, front, "nslookup -type=srv _api._tcp.internal 2>&1")
    assert "8080" in srv and "api.internal" in srv, srv
    # ... and A reaches it by that name
    reached, _, output = tcp_from(docker_client, front, "api.internal", 8080)
    assert reached, output
    # B's service name: NXDOMAIN for A, never B's address
    addresses, output = lookup(docker_client, front, "secret.internal")
    assert addresses == [] and "NXDOMAIN" in output, output
    b_address = next(iter(network_of(docker_client, b.docker_id("secret-0")).values()))["IPAddress"]
    assert b_address not in output
    # and B sees its own
    assert lookup(docker_client, b.docker_id("secret-0"), "secret.internal")[0] == [b_address]


# ---------------------------------------------------------------------------------------------- live DNS


def test_dns_follows_replicas_stopping_and_passing_their_health_check(
    gateway: RunningGateway, tenants: tuple[Tenant, Tenant], docker_client: Any
) -> None:
    a, _ = tenants
    front = a.docker_id("front")
    leaving = a.containers["api-1"]
    leaving_address = next(iter(network_of(docker_client, leaving["docker_id"]).values()))["IPAddress"]
    assert leaving_address in wait_until(lambda: lookup(docker_client, front, "api.internal")[0], timeout=5)

    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        # WHEN one replica is stopped
        answer = client.post(f"/api/containers/{leaving['id']}/stop", headers=a.user.auth_headers)
        assert answer.status_code == 202
        gone_at = stopped_at = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (gone_at is None or stopped_at is None):
            now = time.monotonic()
            if gone_at is None and leaving_address not in lookup(docker_client, front, "api.internal")[0]:
                gone_at = now
            if stopped_at is None and not docker_client.api.inspect_container(leaving["docker_id"])["State"]["Running"]:
                stopped_at = now
            time.sleep(0.05)
        # THEN its address left the answer before (or within 1 s of) the moment it stopped
        assert gone_at is not None and stopped_at is not None
        print(f"address gone {gone_at - stopped_at:+.2f} s relative to the replica's stop")
        assert gone_at <= stopped_at + 1.0

        # WHEN a new replica with a health check starts, THEN it appears within 1 s of passing it
        created = deploy(
            client,
            a,
            "api-2",
            "api",
            health_check={"type": "http", "path": "/", "port": 8080, "interval_seconds": 1, "retries": 1},
        )
        passed_at = seen_at = None
        address = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (passed_at is None or seen_at is None):
            now = time.monotonic()
            body = client.get(f"/api/containers/{created['id']}", headers=a.user.auth_headers).json()
            if passed_at is None and body["status"] == "running":
                passed_at = now
            if address is None:
                for found in docker_client.api.containers(filters={"label": f"{CONTAINER_ID_LABEL}={created['id']}"}):
                    settings = next(iter(found["NetworkSettings"]["Networks"].values()), {})
                    address = settings.get("IPAddress") or None
            if address and seen_at is None and address in lookup(docker_client, front, "api.internal")[0]:
                seen_at = now
            time.sleep(0.05)
        assert passed_at is not None and seen_at is not None, (passed_at, seen_at)
        print(f"new replica in DNS {seen_at - passed_at:+.2f} s after its health check passed")
        assert seen_at <= passed_at + 1.0


# ---------------------------------------------------------------------------------------------- migration


def test_containers_on_the_shared_network_move_to_their_tenants_network_without_a_failed_request(
    gateway: RunningGateway, tenants: tuple[Tenant, Tenant], docker_client: Any
) -> None:
    _, b = tenants
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        b.containers["secret-1"] = running(client, b, deploy(client, b, "secret-1", "secret")["id"], docker_client)
        ids = {b.containers[name]["id"]: b.docker_id(name) for name in ("secret-0", "secret-1")}
        listener = _listener(client, b.user, service="secret", algorithm="round_robin")
        _routed(client, b.user, listener["id"], dict.fromkeys(ids, 1))
        before = {
            container_id: client.get(f"/api/containers/{container_id}", headers=b.user.auth_headers).json()["ports"]
            for container_id in ids
        }

        # GIVEN both replicas on the legacy shared network, as before tenant networks (put back by hand)
        if not any(n["Name"] == LEGACY_CUSTOMER_NETWORK for n in docker_client.api.networks()):
            with contextlib.suppress(docker.errors.APIError):
                docker_client.api.create_network(
                    LEGACY_CUSTOMER_NETWORK,
                    driver="bridge",
                    check_duplicate=True,
                    options={"com.docker.network.bridge.enable_icc": "true"},
                    labels={"berth.network": "customer"},
                )
        for docker_id in ids.values():
            tenant_network = next(iter(network_of(docker_client, docker_id)))
            docker_client.api.connect_container_to_network(docker_id, LEGACY_CUSTOMER_NETWORK)
            docker_client.api.disconnect_container_from_network(docker_id, tenant_network)
        _routed(client, b.user, listener["id"], dict.fromkeys(ids, 1))

        with Stream(listener["port"]) as stream:
            # WHEN the worker's reconciler comes round, THEN each is on its tenant network only
            def migrated() -> bool:
                return all(
                    set(network_of(docker_client, docker_id)) == {next(iter(network_of(docker_client, docker_id)))}
                    and next(iter(network_of(docker_client, docker_id))).startswith(TENANT_NETWORK_PREFIX)
                    for docker_id in ids.values()
                )

            wait_until(migrated, timeout=60, interval=0.2, message="the containers stayed on the shared network")
            settled = time.monotonic()
            wait_until(lambda: stream.answered_since(settled + 3.0), timeout=30, message="the stream stalled")

        # ... with zero failed requests, the same host ports and registry entries, and lb-runtime still routing
        print(f"{len(stream.answers)} requests during the move, {len(stream.failures)} failed")
        assert stream.failures == [] and len(stream.answers) > 50
        for container_id in ids:
            now = client.get(f"/api/containers/{container_id}", headers=b.user.auth_headers).json()
            assert now["ports"] == before[container_id] and now["status"] == "running"
        _routed(client, b.user, listener["id"], dict.fromkeys(ids, 1))
        found = client.get("/api/service-discovery/services/secret", headers=b.user.auth_headers).json()
        assert {instance["id"] for instance in found["instances"]} == set(ids)
        assert found["dns_name"] == "secret.internal"
        # ... and the internal DNS answers their new tenant-network addresses
        addresses = sorted(next(iter(network_of(docker_client, d).values()))["IPAddress"] for d in ids.values())
        wait_until(
            lambda: lookup(docker_client, b.docker_id("secret-0"), "secret.internal")[0] == addresses,
            timeout=5,
            message="secret.internal does not answer the moved replicas",
        )
        assert (
            client.delete(f"/api/load-balancer/listeners/{listener['id']}", headers=b.user.auth_headers).status_code
            == 204
        )


# ---------------------------------------------------------------------------------------------- bad names


@pytest.mark.parametrize(
    "service", ["Web", "web_api", "-web", "web-", "a" * 64, "web.internal", "", "wéb", "web api", "web/x"]
)
def test_service_names_that_are_not_dns_labels_are_refused_at_create_time(
    client: httpx.Client, signed_in_user: SignedInUser, service: str
) -> None:
    headers = signed_in_user.auth_headers
    container = {"image_id": "img", "name": "web-1", "service": service, "ports": [{"container_port": 8080}]}
    for path, body in (("/api/containers", container), ("/api/load-balancer/listeners", {"service": service})):
        answer = client.post(path, json=body, headers=headers)
        assert answer.status_code == 422, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "validation_failed"
        assert "service" in error["message"] and ("DNS label" in error["message"] or "at least 1" in error["message"])


def test_dns_label_service_names_pass_validation(client: httpx.Client, signed_in_user: SignedInUser) -> None:
    # A valid name gets past validation (to the missing image: 404), on both routes' validation.
    body = {"image_id": "img", "name": "web-1", "service": "a-1" + "b" * 60, "ports": [{"container_port": 8080}]}
    answer = client.post("/api/containers", json=body, headers=signed_in_user.auth_headers)
    assert answer.status_code != 422, answer.text
