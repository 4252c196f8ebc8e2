"""Customer traffic end to end: a user deploys replicas of the "web" test image through the gateway, puts a
listener in front of the service, and requests to the listener's port on 127.0.0.1 are spread by lb-runtime
over the healthy replicas it learns from the registry (kept in step by the host worker).

Each replica answers /cgi-bin/whoami with its own hostname, so every answer names the replica that served it.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest

from tests.conftest import RUN_ID, RunningGateway, RunningLb, RunningWorker
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.support.certificates import make_ca
from tests.support.docker_containers import remove_labelled
from tests.support.docker_images import build_test_image, save_image
from tests.support.plans import move_to_plan
from tests.support.waiting import wait_until
from worker.container_runtime import OWNER_LABEL

pytestmark = pytest.mark.docker

WHOAMI = "/cgi-bin/whoami"


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-traffic"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("web") / "web.tar")
    docker_client.images.remove(tag)
    yield path


@dataclass
class Deployment:
    user: SignedInUser
    image_id: str
    replicas: dict[str, str] = field(default_factory=dict)  # container id -> hostname (who answers whoami)
    extra: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def deployment(
    gateway: RunningGateway,
    worker: Any,
    lb_runtime: RunningLb,
    web_archive: Path,
    docker_client: docker.DockerClient,
    test_database: str,
) -> Iterator[Deployment]:
    """A user with three running replicas of service "web"; everything they own is removed at the end. The
    tests add a failing replica and a second service of 3 beside them, more than the free plan's 3
    containers: the user is on ``pro``, as a customer running that much would be."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)
        tokens = move_to_plan(client, test_database, user.id, "pro", email=user.email, password=user.password)
        user.access_token, user.refresh_token = tokens["access_token"], tokens["refresh_token"]
        image = upload_and_process(client, user, "web", web_archive)
        assert image["status"] == "ready", image
        deployed = Deployment(user, image["id"])
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for index in range(3):
                container = _deploy(client, user, image["id"], f"web-{index}")
                deployed.replicas[container["id"]] = _hostname(container)
        yield deployed
    finally:
        remove_labelled(docker_client, OWNER_LABEL, user.id)


def _deploy(client: httpx.Client, user: SignedInUser, image_id: str, name: str, **extra: Any) -> dict[str, Any]:
    body = {"image_id": image_id, "name": name, "service": "web", "ports": [{"container_port": 8080}], **extra}

    unavailable: list[str] = []

    def created() -> httpx.Response | None:
        answer = client.post("/api/containers", json=body, headers=user.auth_headers)
        if answer.status_code == 503 and answer.json()["error"]["code"] == "service_unavailable":
            unavailable.append(answer.text)
            return None  # no live host yet: until the session worker registers its host
        return answer

    answer = wait_until(created, timeout=30, interval=0.5, message="no host took the container")
    assert answer.status_code == 202, (answer.text, unavailable)
    return _wait_for_status(client, user, answer.json()["id"], "unhealthy" if "health_check" in extra else "running")


def _wait_for_status(
    client: httpx.Client, user: SignedInUser, container_id: str, status: str, timeout: float = 60
) -> dict[str, Any]:

    def in_status() -> dict[str, Any] | None:
        body = dict(client.get(f"/api/containers/{container_id}", headers=user.auth_headers).json())
        return body if body["status"] == status else None

    return wait_until(in_status, timeout=timeout, message=f"{container_id} did not become {status}")


def _hostname(container: dict[str, Any]) -> str:
    """Who the container says it is, asked directly on its own host port."""
    port = container["ports"][0]

    def hostname() -> str | None:
        answer = httpx.get(f"http://{port['host_ip']}:{port['host_port']}{WHOAMI}", timeout=2)
        return answer.text.strip() if answer.status_code == 200 else None

    return wait_until(
        hostname,
        timeout=15,
        interval=0.2,
        ignoring=(httpx.HTTPError,),
        message=f"container {container['id']} never answered on its own port",
    )


def _listener(client: httpx.Client, user: SignedInUser, **body: Any) -> dict[str, Any]:
    answer = client.post("/api/load-balancer/listeners", json={"service": "web", **body}, headers=user.auth_headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _routed(
    client: httpx.Client, user: SignedInUser, listener_id: str, expected: dict[str, int], timeout: float = 30
) -> None:
    """Wait until lb-runtime routes the listener to exactly ``expected`` (container id -> weight)."""

    def routes() -> dict[str, str] | None:
        answer = client.get(f"/api/load-balancer/listeners/{listener_id}/stats", headers=user.auth_headers)
        return {i["id"]: i["status"] for i in answer.json()["instances"]} if answer.status_code == 200 else None

    wait_until(
        lambda: routes() == dict.fromkeys(expected, "healthy"),
        timeout=timeout,
        interval=0.1,
        message=lambda: f"lb-runtime routes to {routes()}, not {sorted(expected)}",
    )


def _spread(port: int, requests: int) -> Counter[str]:
    """Send ``requests`` GETs over one keep-alive connection; who answered how often (all must be 200)."""
    served: Counter[str] = Counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as traffic:
        for _ in range(requests):
            answer = traffic.get(WHOAMI)
            assert answer.status_code == 200, answer.text
            served[answer.text.strip()] += 1
    return served


def test_round_robin_spreads_requests_evenly(client: httpx.Client, deployment: Deployment) -> None:
    user = deployment.user
    listener = _listener(client, user, algorithm="round_robin")
    _routed(client, user, listener["id"], dict.fromkeys(deployment.replicas, 1))

    served = _spread(listener["port"], 300)

    assert set(served) == set(deployment.replicas.values())
    assert all(99 <= count <= 101 for count in served.values()), served
    stats = client.get(f"/api/load-balancer/listeners/{listener['id']}/stats", headers=user.auth_headers).json()
    assert stats["requests"] >= 300 and stats["errors"] == 0
    assert stats["latency_ms"]["p50"] is not None
    assert client.delete(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers).status_code == 204


def test_https_listener_terminates_tls_with_the_uploaded_certificate(
    client: httpx.Client, deployment: Deployment
) -> None:
    # GIVEN an uploaded certificate and an https listener presenting it
    user = deployment.user
    ca = make_ca()
    chain, key = ca.issue("shop.example")
    certificate = client.post(
        "/api/load-balancer/certificates",
        json={"name": "shop", "certificate_chain": chain, "private_key": key},
        headers=user.auth_headers,
    ).json()
    listener = _listener(client, user, protocol="https", certificate_ids=[certificate["id"]])
    _routed(client, user, listener["id"], dict.fromkeys(deployment.replicas, 1))
    # WHEN a client that trusts the certificate's CA asks for shop.example
    context = ssl.create_default_context(cadata=ca.pem)
    with (
        socket.create_connection(("127.0.0.1", listener["port"]), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="shop.example") as tls,
    ):
        tls.sendall(f"GET {WHOAMI} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        version = tls.version()
    # THEN TLS is terminated with that certificate and a replica answers
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert any(name in body.decode() for name in deployment.replicas.values()), body
    assert version in ("TLSv1.3", "TLSv1.2")
    assert client.delete(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers).status_code == 204
    assert (
        client.delete(f"/api/load-balancer/certificates/{certificate['id']}", headers=user.auth_headers).status_code
        == 204
    )


def test_weights_three_to_one(client: httpx.Client, deployment: Deployment) -> None:
    user = deployment.user
    first, second, third = deployment.replicas
    listener = _listener(client, user, algorithm="weighted", weights={first: 3, second: 1, third: 0})
    _routed(client, user, listener["id"], {first: 3, second: 1})

    served = _spread(listener["port"], 300)

    assert served == {deployment.replicas[first]: 225, deployment.replicas[second]: 75}
    assert client.delete(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers).status_code == 204


class Stream:
    """Requests one after another to the listener until stopped; every answer with when and who."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, int, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as traffic:
            while not self._stop.is_set():
                try:
                    answer = traffic.get(WHOAMI)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code}: {answer.text}")
                self.answers.append((time.monotonic(), answer.status_code, answer.text.strip()))
                time.sleep(0.005)

    def answered_since(self, moment: float) -> bool:
        return any(at >= moment for at, _, _ in self.answers[-50:])

    def served_by(self, hostname: str, after: float = 0.0) -> list[float]:
        return [at for at, status, who in self.answers if who == hostname and at >= after and status == 200]


def test_stopping_a_replica_drops_no_request_and_a_new_one_gets_traffic(
    client: httpx.Client, deployment: Deployment
) -> None:
    user = deployment.user
    listener = _listener(client, user, algorithm="round_robin")
    _routed(client, user, listener["id"], dict.fromkeys(deployment.replicas, 1))
    leaving = next(iter(deployment.replicas))
    hostname = deployment.replicas[leaving]

    with Stream(listener["port"]) as stream:
        wait_until(lambda: stream.served_by(hostname), message="the replica served nothing before its stop")
        assert client.post(f"/api/containers/{leaving}/stop", headers=user.auth_headers).status_code == 202
        # The worker takes the replica out of the registry, then drains before Docker stops it: lb-runtime
        # must drop it from its routes before the container stops.
        _routed(client, user, listener["id"], {other: 1 for other in deployment.replicas if other != leaving})
        dropped_at = time.monotonic()
        _wait_for_status(client, user, leaving, "stopped")
        stopped_at = time.monotonic()
        # Part of the check: watch the traffic for a second past the stop (answers, not the clock, so a
        # stalled stream cannot pass it by having sent nothing).
        wait_until(lambda: stream.answered_since(stopped_at + 1.0), message="the stream sent nothing after the stop")

        # Not one failed request, and once lb-runtime dropped the replica it sent it no new request (an answer
        # to a request already in flight may still arrive within a short grace).
        assert stream.failures == []
        assert not stream.served_by(hostname, after=dropped_at + 0.25)

        assert client.post(f"/api/containers/{leaving}/start", headers=user.auth_headers).status_code == 202
        running = _wait_for_status(client, user, leaving, "running")
        healthy_at = time.monotonic()
        running_hostname = _hostname(running)
        first_request = wait_until(
            lambda: stream.served_by(running_hostname, after=healthy_at),
            message="the replica got no traffic after it came back",
        )[0]
        deployment.replicas[leaving] = running_hostname

    assert stream.failures == []
    assert first_request - healthy_at < 1.0, f"the returning replica waited {first_request - healthy_at:.2f}s"
    assert client.delete(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers).status_code == 204


def test_a_replica_failing_its_health_check_gets_no_traffic(client: httpx.Client, deployment: Deployment) -> None:
    user = deployment.user
    sick = _deploy(
        client,
        user,
        deployment.image_id,
        "web-sick",
        health_check={
            "type": "http",
            "path": "/no-such-page",
            "interval_seconds": 1,
            "timeout_seconds": 1,
            "retries": 1,
        },
    )
    deployment.extra.append(sick["id"])
    listener = _listener(client, user, algorithm="round_robin")
    _routed(client, user, listener["id"], dict.fromkeys(deployment.replicas, 1))

    def statuses() -> dict[str, str]:
        discovered = client.get("/api/service-discovery/services/web", headers=user.auth_headers).json()
        return {instance["id"]: instance["status"] for instance in discovered["instances"]}

    # The worker registers a container in its next registry round after the start job settles it as
    # unhealthy, so discovery may lag the container's own status by a round.
    wanted = {sick["id"], *deployment.replicas}
    seen = wait_until(
        lambda: found if wanted <= set(found := statuses()) else None,
        timeout=10,
        interval=0.2,
        message=lambda: f"discovery lacks some of {sorted(wanted)}: {statuses()}",
    )
    assert seen[sick["id"]] == "critical"
    assert all(seen[replica] == "passing" for replica in deployment.replicas)

    # Registered, and critical: still no traffic reaches it.
    served = _spread(listener["port"], 60)
    assert _hostname(sick) not in served
    assert set(served) == set(deployment.replicas.values())
    assert client.delete(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers).status_code == 204


def test_logs_of_a_serving_replica_arrive_through_the_api(client: httpx.Client, deployment: Deployment) -> None:
    """busybox httpd -vv logs every request's path on stderr; the host worker ships those lines to the API."""
    user = deployment.user
    replica = next(iter(deployment.replicas))
    container = client.get(f"/api/containers/{replica}", headers=user.auth_headers).json()
    port = container["ports"][0]
    marker = f"/marker-{RUN_ID}"  # no such page: a 404, but its path is logged
    assert httpx.get(f"http://{port['host_ip']}:{port['host_port']}{marker}", timeout=5).status_code == 404

    def shipped() -> list[dict[str, Any]]:
        logs = client.get(f"/api/containers/{replica}/logs", params={"tail": 200}, headers=user.auth_headers)
        assert logs.status_code == 200, logs.text
        return [line for line in logs.json()["lines"] if RUN_ID in line["text"]]

    found = wait_until(shipped, timeout=15, interval=0.5, message="no shipped line mentions the request")
    assert found[0]["stream"] == "stderr"
    since = found[0]["ts"]
    later = client.get(f"/api/containers/{replica}/logs", params={"since": since}, headers=user.auth_headers).json()
    assert later["lines"] and all(line["ts"] >= since for line in later["lines"])


def test_the_platform_announces_itself_to_admins(
    client: httpx.Client, deployment: Deployment, test_database: str, lb_runtime: RunningLb, worker: RunningWorker
) -> None:
    """The host worker and lb-runtime register in internal-services, which only an admin can read."""
    admin = sign_up_and_in(client)
    with psycopg.connect(test_database) as conn:
        conn.execute("UPDATE users SET role = 'admin' WHERE id = %s", (admin.id,))
    tokens = client.post("/api/auth/signin", json={"email": admin.email, "password": admin.password}).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    def internal_services() -> dict[str, Any] | None:
        listed = client.get(
            "/api/service-discovery/services", params={"namespace": "internal-services"}, headers=headers
        )
        assert listed.status_code == 200, listed.text
        services = {item["name"]: item["instances"] for item in listed.json()["items"]}
        return services if {"host-worker", "lb-runtime"} <= set(services) else None

    services = wait_until(
        internal_services, timeout=20, interval=0.5, message="host-worker and lb-runtime did not both announce"
    )
    lb_port = int(lb_runtime.admin_url.rsplit(":", 1)[1])
    assert any(i["port"] == lb_port and i["status"] == "passing" for i in services["lb-runtime"])
    # Workers other tests killed may linger, critical, until they expire; the session's own one passes.
    worker_port = int(worker.env["BERTH_WORKER_ADMIN_PORT"])
    [announced] = [i for i in services["host-worker"] if i["port"] == worker_port]
    assert announced["status"] == "passing"
    # The announced port serves the worker's metrics.
    worker_metrics = httpx.get(f"http://{announced['address']}:{announced['port']}/metrics", timeout=5)
    assert "berth_worker_jobs_total" in worker_metrics.text

    refused = client.get(
        "/api/service-discovery/services",
        params={"namespace": "internal-services"},
        headers=deployment.user.auth_headers,
    )
    assert refused.status_code == 404


# A replica whose whoami takes 300 ms: the same image, its own CGI written at start by a command override.
SLOW_WHOAMI = (
    "mkdir -p /tmp/www/cgi-bin && "
    "printf '#!/bin/sh\\nsleep 0.3\\necho Content-Type: text/plain\\necho\\nhostname\\n' > /tmp/www/cgi-bin/whoami && "
    "chmod 755 /tmp/www/cgi-bin/whoami && exec httpd -f -p 8080 -h /tmp/www"
)


def test_least_connections_sends_less_to_a_slow_replica(client: httpx.Client, deployment: Deployment) -> None:
    user = deployment.user
    fast = [_deploy(client, user, deployment.image_id, f"mixed-{index}", service="mixed") for index in range(2)]
    slow = _deploy(client, user, deployment.image_id, "mixed-slow", service="mixed", command=["sh", "-c", SLOW_WHOAMI])
    deployment.extra.extend(container["id"] for container in [*fast, slow])
    slow_host = _hostname(slow)
    answer = client.post(
        "/api/load-balancer/listeners",
        json={"service": "mixed", "algorithm": "least_connections"},
        headers=user.auth_headers,
    )
    assert answer.status_code == 201, answer.text
    listener = answer.json()
    _routed(client, user, listener["id"], {container["id"]: 1 for container in [*fast, slow]})

    # 6 clients at once, 20 requests each: a replica that holds its requests longer gets fewer new ones
    def client_run(_: int) -> Counter[str]:
        return _spread(listener["port"], 20)

    with ThreadPoolExecutor(max_workers=6) as pool:
        served = sum(pool.map(client_run, range(6)), Counter())

    assert sum(served.values()) == 120
    assert served[slow_host] < 120 / 3 / 2, served  # round robin would give it 40
    assert client.delete(f"/api/load-balancer/listeners/{listener['id']}", headers=user.auth_headers).status_code == 204
