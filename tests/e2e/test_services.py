"""Services end to end: a user declares 3 replicas of the "web" test image, puts a listener in front of them,
and deploys, rolls back and scales while 4 clients keep calling the listener: no request fails, and every
answer names the replica (hostname) that served it, so each can be traced to its release.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import RUN_ID, RunningGateway, RunningLb, RunningWorker, start_worker, stop_process
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.support.docker_containers import labelled, remove_labelled
from tests.support.docker_images import build_test_image, save_image
from tests.support.waiting import wait_until
from worker.container_runtime import OWNER_LABEL

pytestmark = pytest.mark.docker

WHOAMI = "/cgi-bin/whoami"
HEALTH_CHECK = {"type": "http", "path": WHOAMI, "interval_seconds": 1, "timeout_seconds": 1, "retries": 2}
POLICY = {"max_surge": 1, "max_unavailable": 0, "min_healthy_seconds": 1, "healthy_deadline_seconds": 60}
CLIENTS = 4


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-services"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("web") / "web.tar")
    docker_client.images.remove(tag)
    yield path


@dataclass
class Web:
    user: SignedInUser
    v1: str  # image ids: the same archive uploaded twice, as two versions
    v2: str
    port: int  # the listener's


@pytest.fixture(scope="module")
def web(
    gateway: RunningGateway, worker: Any, lb_runtime: RunningLb, web_archive: Path, docker_client: docker.DockerClient
) -> Iterator[Web]:
    """Service "web": 3 ready replicas of v1 behind a listener; everything the user owns is removed after."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)
        v1, v2 = (upload_and_process(client, user, f"web-{version}", web_archive) for version in ("v1", "v2"))
        assert v1["status"] == v2["status"] == "ready"
        try:
            created = wait_until(
                lambda: _created(client, user, v1["id"]), timeout=30, interval=0.5, message="no host is up"
            )
            assert created.status_code == 202, created.text
            assert created.json()["release"] == 1 and created.json()["dns_name"] == "web.internal"
            _wait_for_release(client, user, 1, "healthy")
            listener = client.post(
                "/api/load-balancer/listeners",
                json={"service": "web", "algorithm": "round_robin"},
                headers=user.auth_headers,
            )
            assert listener.status_code == 201, listener.text
            _wait_routed(client, user, listener.json()["id"], 3)
            yield Web(user, v1["id"], v2["id"], listener.json()["port"])
        finally:
            remove_labelled(docker_client, OWNER_LABEL, user.id)


@pytest.fixture(scope="module")
def extra_workers() -> Iterator[list[RunningWorker]]:
    """Workers of extra hosts a test started; they live until the module ends (they remove their replicas)."""
    started: list[RunningWorker] = []
    yield started
    for running in started:
        stop_process(running.process)


def _created(client: httpx.Client, user: SignedInUser, image_id: str) -> httpx.Response | None:
    body = {
        "name": "web",
        "image_id": image_id,
        "replicas": 3,
        "ports": [{"container_port": 8080}],
        "health_check": HEALTH_CHECK,
        "update_policy": POLICY,
    }
    answer = client.post("/api/services", json=body, headers=user.auth_headers)
    return None if answer.status_code == 503 else answer


def _release(client: httpx.Client, user: SignedInUser, number: int) -> dict[str, Any]:
    answer = client.get("/api/services/web/releases", headers=user.auth_headers)
    assert answer.status_code == 200, answer.text
    return next(item for item in answer.json()["items"] if item["number"] == number)


def _wait_for_release(
    client: httpx.Client, user: SignedInUser, number: int, *statuses: str, timeout: float = 120
) -> dict[str, Any]:
    return wait_until(
        lambda: (release := _release(client, user, number))["status"] in statuses and release,
        timeout=timeout,
        interval=0.5,
        message=lambda: f"release {number} is {_release(client, user, number)}, not {statuses}",
    )


def _wait_routed(client: httpx.Client, user: SignedInUser, listener_id: str, count: int) -> None:
    def routes() -> list[str]:
        answer = client.get(f"/api/load-balancer/listeners/{listener_id}/stats", headers=user.auth_headers)
        if answer.status_code != 200:
            return []
        return [i["id"] for i in answer.json()["instances"] if i["status"] == "healthy"]

    wait_until(lambda: len(routes()) == count, timeout=30, interval=0.2, message=lambda: f"routes: {routes()}")


def _replicas(client: httpx.Client, user: SignedInUser) -> list[dict[str, Any]]:
    answer = client.get("/api/containers", params={"service": "web", "limit": 100}, headers=user.auth_headers)
    assert answer.status_code == 200, answer.text
    return [item for item in answer.json()["items"] if item["desired_state"] != "deleted"]


def _in_docker(docker_client: docker.DockerClient, user: SignedInUser) -> int:
    """How many containers of the user Docker holds (sparse: one being removed meanwhile is no error)."""
    return len(labelled(docker_client, OWNER_LABEL, user.id, sparse=True))


def _hostname(container: dict[str, Any]) -> str:
    port = container["ports"][0]
    answer = httpx.get(f"http://{port['host_ip']}:{port['host_port']}{WHOAMI}", timeout=5)
    assert answer.status_code == 200
    return answer.text.strip()


class Streams:
    """``CLIENTS`` threads, each calling the listener over its own keep-alive connection until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> Streams:
        for thread in self._threads:
            thread.start()
        wait_until(lambda: len(self.answers) > 20, message="the streams got no answers")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

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
                    continue
                self.answers.append((time.monotonic(), answer.text.strip()))
                time.sleep(0.005)

    def served_since(self, moment: float) -> set[str]:
        return {who for at, who in self.answers if at >= moment}


def _steady(client: httpx.Client, user: SignedInUser, release: int, count: int = 3) -> list[dict[str, Any]]:
    """Wait until exactly ``count`` replicas exist, all of ``release`` and running; them."""

    def settled() -> list[dict[str, Any]] | None:
        replicas = _replicas(client, user)
        ok = len(replicas) == count and all(r["release"] == release and r["status"] == "running" for r in replicas)
        return replicas if ok else None

    return wait_until(settled, timeout=60, interval=0.5, message=lambda: f"replicas: {_replicas(client, user)}")


def test_deploying_v2_under_load_fails_no_request_and_ends_on_v2(client: httpx.Client, web: Web) -> None:
    user = web.user
    with Streams(web.port) as streams:
        deployed = client.post("/api/services/web/deploy", json={"image_id": web.v2}, headers=user.auth_headers)
        assert deployed.status_code == 202, deployed.text
        assert deployed.json()["number"] == 2 and deployed.json()["status"] == "pending"
        release = _wait_for_release(client, user, 2, "healthy", "failed", "rolled_back")
        assert release["status"] == "healthy", release
        v2_hosts = {_hostname(replica) for replica in _steady(client, user, 2)}
        after = time.monotonic() + 2.0  # lb-runtime's view of the registry settles within a second
        wait_until(lambda: len(streams.served_since(after)) >= 3, timeout=20, message="no traffic after the deploy")

    assert streams.failures == [], streams.failures[:5]
    assert streams.served_since(after) == v2_hosts
    assert _release(client, user, 1)["status"] == "superseded"
    service = client.get("/api/services/web", headers=user.auth_headers).json()
    assert service["release"] == 2 and service["running_replicas"] == 3
    assert service["replicas_by_release"] == [{"release": 2, "running": 3, "total": 3}]


def test_a_v3_failing_its_health_check_is_rolled_back_while_v2_keeps_serving(
    client: httpx.Client, web: Web, docker_client: docker.DockerClient
) -> None:
    user = web.user
    v2_hosts = {_hostname(replica) for replica in _steady(client, user, 2)}
    failing = {**HEALTH_CHECK, "path": "/no-such-page"}
    with Streams(web.port) as streams:
        deployed = client.post("/api/services/web/deploy", json={"health_check": failing}, headers=user.auth_headers)
        assert deployed.status_code == 202, deployed.text
        again = client.post("/api/services/web/deploy", json={"image_id": web.v1}, headers=user.auth_headers)
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        release = _wait_for_release(client, user, 3, "rolled_back", "failed", "healthy")
        _steady(client, user, 2)

    assert release["status"] == "rolled_back", release
    assert "answered 404" in release["reason"], release
    assert streams.failures == [], streams.failures[:5]
    assert {who for _, who in streams.answers} <= v2_hosts
    wait_until(
        lambda: _in_docker(docker_client, user) == 3,
        timeout=30,
        message="a release 3 container is left in Docker",
    )
    service = client.get("/api/services/web", headers=user.auth_headers).json()
    assert service["release"] == 2 and service["release_status"] == "healthy"


def test_scaling_3_to_1_to_3_under_load_fails_no_request(client: httpx.Client, web: Web) -> None:
    user = web.user
    _steady(client, user, 2)
    with Streams(web.port) as streams:
        down = client.patch("/api/services/web", json={"replicas": 1}, headers=user.auth_headers)
        assert down.status_code == 200 and down.json()["replicas"] == 1, down.text
        _steady(client, user, 2, count=1)
        time.sleep(2.0)  # traffic on one replica
        up = client.patch("/api/services/web", json={"replicas": 3}, headers=user.auth_headers)
        assert up.status_code == 200, up.text
        _steady(client, user, 2, count=3)
        time.sleep(2.0)

    assert streams.failures == [], streams.failures[:5]


def test_a_worker_killed_mid_rollout_leaves_exactly_the_declared_replicas(
    client: httpx.Client,
    web: Web,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    worker: RunningWorker,
    extra_workers: list[RunningWorker],
) -> None:
    user = web.user
    _steady(client, user, 2)
    # A second host whose worker is killed (SIGKILL) while the rollout places replicas on it, then comes back.
    env = {"BERTH_HOST_ID": f"svc-kill-{RUN_ID}", "BERTH_WORKER_ADMIN_PORT": "0"}
    second = start_worker(tmp_path, env)
    extra_workers.append(second)
    wait_until(lambda: "host registered" in second.log(), timeout=30, message="the second worker never started")
    deployed = client.post("/api/services/web/deploy", json={"image_id": web.v1}, headers=user.auth_headers)
    assert deployed.status_code == 202, deployed.text
    wait_until(lambda: any(r["release"] == 4 for r in _replicas(client, user)), timeout=30, message="no v4 replica")
    os.kill(second.process.pid, signal.SIGKILL)
    second.process.wait(timeout=10)
    time.sleep(1.0)
    extra_workers.append(start_worker(tmp_path, env))
    release = _wait_for_release(client, user, 4, "healthy", "rolled_back", "failed", timeout=180)
    assert release["status"] == "healthy", release
    _steady(client, user, 4)
    wait_until(
        lambda: _in_docker(docker_client, user) == 3,
        timeout=90,
        message="Docker holds more (or fewer) than the 3 declared replicas",
    )


def test_bad_input_gets_clear_errors(client: httpx.Client, web: Web) -> None:
    user = web.user
    other = sign_up_and_in(client)
    body = {"name": "other", "image_id": web.v1, "replicas": 1, "ports": [{"container_port": 8080}]}

    def create(**change: Any) -> httpx.Response:
        return client.post("/api/services", json={**body, **change}, headers=user.auth_headers)

    unknown = create(image_id="00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    theirs = client.post("/api/services", json=body, headers=other.auth_headers)
    assert theirs.status_code == 404  # someone else's image does not exist for them
    too_many = create(replicas=11)
    assert too_many.status_code == 403 and too_many.json()["error"]["code"] == "quota_exceeded"
    stuck = create(update_policy={"max_surge": 0, "max_unavailable": 0})
    assert stuck.status_code == 422 and "max_surge" in stuck.text
    taken = create(name="web", replicas=0)
    assert taken.status_code == 409
    assert client.get("/api/services/web", headers=other.auth_headers).status_code == 404
    assert client.post("/api/services/web/deploy", json={}, headers=other.auth_headers).status_code == 404
    # a rollback's body may be left out, but one that is sent is the documented object (JSON null is not)
    for wrong in (b"null", b"[]", b'"v1"'):
        rolled = client.post(
            "/api/services/web/rollback",
            content=wrong,
            headers={**user.auth_headers, "Content-Type": "application/json"},
        )
        assert rolled.status_code == 422 and rolled.json()["error"]["code"] == "validation_failed", rolled.text
    unconfirmed = client.request("DELETE", "/api/services/web", json={"confirm": "nope"}, headers=user.auth_headers)
    # a wrong confirmation deletes nothing: 409 confirmation_mismatch, as for an account
    assert unconfirmed.status_code == 409 and unconfirmed.json()["error"]["code"] == "confirmation_mismatch"
    assert "confirm" in unconfirmed.json()["error"]["message"]
    assert client.get("/api/services/web", headers=user.auth_headers).status_code == 200


def test_deleting_the_service_removes_its_replicas_and_listeners(
    client: httpx.Client, web: Web, docker_client: docker.DockerClient
) -> None:
    user = web.user
    deleted = client.request("DELETE", "/api/services/web", json={"confirm": "web"}, headers=user.auth_headers)
    assert deleted.status_code == 202, deleted.text
    assert client.get("/api/services/web", headers=user.auth_headers).status_code == 404
    listeners = client.get("/api/load-balancer/listeners", headers=user.auth_headers).json()["items"]
    assert [item for item in listeners if item["service"] == "web"] == []
    wait_until(
        lambda: _in_docker(docker_client, user) == 0,
        timeout=30,
        message="replicas are left in Docker",
    )
