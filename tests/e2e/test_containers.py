"""Containers through the gateway: a user deploys the "web" test image, reaches it on its host port, stops,
starts and deletes it; other tenants see nothing of it; bad input is a clear 4xx; secret environment stays
sealed, health checks and the event history are answered, and logs are read from the shipped lines."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest

from shared.config import get_function_settings
from shared.secrets import open_env
from tests.conftest import RUN_ID, TEST_DATABASE_URL, RunningGateway, RunningWorker
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.support.docker_containers import remove_labelled
from tests.support.docker_images import build_test_image, save_image
from tests.support.waiting import wait_until
from worker.container_runtime import CONTAINER_ID_LABEL, OWNER_LABEL

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("web") / "web.tar")
    docker_client.images.remove(tag)  # the worker must load it from the archive
    yield path


@pytest.fixture
def owners(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Ids of the test's users; every Docker container labelled with one of them is removed afterwards."""
    ids: list[str] = []
    yield ids
    for owner in ids:
        remove_labelled(docker_client, OWNER_LABEL, owner)


def _user(client: httpx.Client, owners: list[str]) -> SignedInUser:
    user = sign_up_and_in(client)
    owners.append(user.id)
    return user


def _create(client: httpx.Client, user: SignedInUser, body: dict[str, Any], timeout: float = 30) -> httpx.Response:
    """POST /api/containers, waiting (on 503) for the session worker to register its host."""

    def answered() -> httpx.Response | None:
        answer = client.post("/api/containers", json=body, headers=user.auth_headers)
        return None if answer.status_code == 503 else answer

    return wait_until(answered, timeout=timeout, interval=0.5, message="no host registered to take the container")


def _wait_for(
    client: httpx.Client, user: SignedInUser, container_id: str, status: str, timeout: float = 60
) -> dict[str, Any]:

    def in_status() -> dict[str, Any] | None:
        answer = client.get(f"/api/containers/{container_id}", headers=user.auth_headers)
        assert answer.status_code == 200, answer.text
        body = dict(answer.json())
        assert body["status"] != "failed", body
        return body if body["status"] == status else None

    return wait_until(
        in_status, timeout=timeout, interval=0.3, message=f"container {container_id} did not become {status}"
    )


def _whoami(port: int, timeout: float = 15) -> httpx.Response:
    return wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/cgi-bin/whoami", timeout=3),
        timeout=timeout,
        interval=0.3,
        ignoring=(httpx.HTTPError,),
        message=f"nothing answered on port {port}",
    )


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/cgi-bin/whoami", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _wait_for_stats(client: httpx.Client, user: SignedInUser, container_id: str, timeout: float = 20) -> Any:
    """GET /api/containers/{id}/stats until the worker's sampler stored a first sample."""

    def sampled() -> Any:
        answer = client.get(f"/api/containers/{container_id}/stats", headers=user.auth_headers)
        assert answer.status_code == 200, answer.text
        stats = answer.json()
        if stats["latest"] is None:
            assert stats["history"] == []
            return None
        return stats

    return wait_until(sampled, timeout=timeout, interval=0.5, message="no stats sample within the timeout")


def test_deploy_reach_stop_start_delete(
    client: httpx.Client,
    worker: Any,
    web_archive: Path,
    docker_client: docker.DockerClient,
    owners: list[str],
) -> None:
    # GIVEN a user with the "web" image ready
    user = _user(client, owners)
    image = upload_and_process(client, user, "web", web_archive)
    assert image["status"] == "ready", image

    # WHEN they deploy it with port 8080 published
    created = _create(client, user, {"image_id": image["id"], "name": "web-1", "ports": [{"container_port": 8080}]})

    # THEN it is accepted, scheduled on a host with a host port, and comes up reachable
    assert created.status_code == 202, created.text
    container = created.json()
    assert container["desired_state"] == "running"
    assert container["image_id"] == image["id"]
    assert container["host_id"]
    [port] = container["ports"]
    assert port["container_port"] == 8080 and port["host_port"]
    running = _wait_for(client, user, container["id"], "running")
    assert running["reason"] is None
    answer = _whoami(port["host_port"])
    assert answer.status_code == 200
    assert answer.text.strip()
    stats = _wait_for_stats(client, user, container["id"])
    assert stats["latest"]["memory_limit_bytes"] == running["memory_mb"] * 1024 * 1024
    assert stats["latest"]["cpu_percent"] >= 0
    assert stats["history"] and stats["history"][-1] == stats["latest"]

    listed = client.get("/api/containers", headers=user.auth_headers).json()
    assert [item["id"] for item in listed["items"]] == [container["id"]]
    assert client.get("/api/containers?state=stopped", headers=user.auth_headers).json()["items"] == []

    # AND the image cannot be deleted while the container uses it
    in_use = client.delete(f"/api/images/{image['id']}", headers=user.auth_headers)
    assert in_use.status_code == 409, in_use.text
    assert "web-1" in in_use.json()["error"]["message"]

    # AND another user sees nothing of it
    other = _user(client, owners)
    for method, path in (
        ("GET", f"/api/containers/{container['id']}"),
        ("POST", f"/api/containers/{container['id']}/stop"),
        ("DELETE", f"/api/containers/{container['id']}"),
        ("GET", f"/api/containers/{container['id']}/logs"),
        ("GET", f"/api/containers/{container['id']}/stats"),
        ("GET", f"/api/containers/{container['id']}/events"),
    ):
        refused = client.request(method, path, headers=other.auth_headers)
        assert refused.status_code == 404, (method, path, refused.text)
        assert refused.json()["error"]["code"] == "not_found"
    assert client.get("/api/containers", headers=other.auth_headers).json()["items"] == []

    # AND its logs show the request (httpd logs each one on stderr; the host worker ships the lines)

    def request_logged() -> bool:
        logs = client.get(f"/api/containers/{container['id']}/logs?tail=50", headers=user.auth_headers)
        assert logs.status_code == 200, logs.text
        return any("/cgi-bin/whoami" in line["text"] for line in logs.json()["lines"])

    wait_until(request_logged, timeout=20, interval=0.5, message="the request never reached the container's logs")

    # WHEN stopped THEN it is stopped and the port no longer answers
    stopped = client.post(f"/api/containers/{container['id']}/stop", headers=user.auth_headers)
    assert stopped.status_code == 202, stopped.text
    assert stopped.json()["desired_state"] == "stopped"
    _wait_for(client, user, container["id"], "stopped")
    assert not _answers(port["host_port"])

    # WHEN started again THEN it runs and answers on the same port
    started = client.post(f"/api/containers/{container['id']}/start", headers=user.auth_headers)
    assert started.status_code == 202, started.text
    _wait_for(client, user, container["id"], "running")
    assert _whoami(port["host_port"]).status_code == 200

    # WHEN restarted THEN the same Docker container starts afresh and answers again
    [docker_container] = docker_client.containers.list(
        ignore_removed=True, filters={"label": f"{CONTAINER_ID_LABEL}={container['id']}"}
    )
    started_at = docker_container.attrs["State"]["StartedAt"]
    restarted = client.post(f"/api/containers/{container['id']}/restart", headers=user.auth_headers)
    assert restarted.status_code == 202, restarted.text

    def restarted_in_docker() -> bool:
        docker_container.reload()
        return bool(docker_container.attrs["State"]["StartedAt"] != started_at and docker_container.status == "running")

    wait_until(restarted_in_docker, timeout=30, interval=0.2, message="the container was not restarted")
    _wait_for(client, user, container["id"], "running")
    assert _whoami(port["host_port"]).status_code == 200
    events = client.get(f"/api/containers/{container['id']}/events", headers=user.auth_headers).json()["items"]
    newest = [event["status"] for event in events[:4]]  # newest first: running <- starting <- stopping
    assert newest[0] == "running" and "stopping" in newest, newest

    # WHEN deleted THEN it is deleted, Docker has no container of it, and the image can go
    deleted = client.delete(f"/api/containers/{container['id']}", headers=user.auth_headers)
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["desired_state"] == "deleted"
    _wait_for(client, user, container["id"], "deleted")
    labelled = docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{CONTAINER_ID_LABEL}={container['id']}"}
    )
    assert labelled == []
    again = client.post(f"/api/containers/{container['id']}/start", headers=user.auth_headers)
    assert again.status_code == 409, again.text
    assert client.get("/api/containers", headers=user.auth_headers).json()["items"] == []
    assert client.delete(f"/api/images/{image['id']}", headers=user.auth_headers).status_code == 204


def test_bad_container_input_is_a_clear_4xx(
    client: httpx.Client, worker: Any, web_archive: Path, owners: list[str]
) -> None:
    user = _user(client, owners)
    image = upload_and_process(client, user, "web", web_archive)
    someone = _user(client, owners)
    theirs = upload_and_process(client, someone, "web", web_archive)
    good = {"image_id": image["id"], "name": "ok", "ports": [{"container_port": 8080}]}

    cases: list[tuple[dict[str, Any], int]] = [
        ({**good, "image_id": "00000000-0000-0000-0000-000000000000"}, 404),
        ({**good, "image_id": "not-a-uuid"}, 404),
        ({**good, "image_id": theirs["id"]}, 404),
        ({**good, "memory_mb": 100000}, 422),
        ({**good, "memory_mb": 8}, 422),
        ({**good, "cpu": 5}, 422),
        ({**good, "ports": [{"container_port": 0}]}, 422),
        ({**good, "ports": [{"container_port": 8080, "protocol": "sctp"}]}, 422),
        ({**good, "ports": [{"container_port": p} for p in range(8000, 8006)]}, 422),
        ({**good, "restart_policy": "sometimes"}, 422),
        ({**good, "name": "Not_A_Label"}, 422),
        ({**good, "privileged": True}, 422),
        ({"name": "ok"}, 422),
    ]
    for body, status in cases:
        answer = _create(client, user, body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error"]["message"]

    assert client.get("/api/containers/nope", headers=user.auth_headers).status_code == 404
    assert client.get("/api/containers?state=sleepy", headers=user.auth_headers).status_code == 400
    assert client.get("/api/containers?cursor=zzz", headers=user.auth_headers).status_code == 400
    assert client.get("/api/containers", headers=user.auth_headers).json()["items"] == []


def test_stats_stay_tenant_scoped(client: httpx.Client) -> None:
    user = sign_up_and_in(client)
    unknown = "00000000-0000-4000-8000-000000000000"
    answer = client.get(f"/api/containers/{unknown}/stats", headers=user.auth_headers)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def _sql(query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def test_secret_env_health_check_and_events(
    client: httpx.Client, gateway: RunningGateway, worker: RunningWorker, web_archive: Path, owners: list[str]
) -> None:
    secret = "s3cr3t-" + secrets.token_hex(8)
    # GIVEN a user with the "web" image ready
    user = _user(client, owners)
    image = upload_and_process(client, user, "web", web_archive)
    assert image["status"] == "ready", image

    # WHEN they deploy it with a secret environment and a tcp health check on its (default) port
    created = _create(
        client,
        user,
        {
            "image_id": image["id"],
            "name": "web-secret",
            "env": {"MODE": "test"},
            "secret_env": {"DB_PASSWORD": secret},
            "ports": [{"container_port": 8080}],
            "health_check": {"type": "tcp", "interval_seconds": 2},
        },
    )

    # THEN the answer names the secret, never its value, and shows the normalised health check
    assert created.status_code == 202, created.text
    container = created.json()
    assert container["secret_env_names"] == ["DB_PASSWORD"] and container["env_names"] == ["MODE"]
    assert container["health_check"] == {
        "type": "tcp",
        "port": 8080,
        "path": None,
        "interval_seconds": 2,
        "timeout_seconds": 2,
        "retries": 3,
        "start_period_seconds": 0,
    }
    assert (container["restart_count"], container["exit_code"]) == (0, None)
    running = _wait_for(client, user, container["id"], "running")
    assert running["secret_env_names"] == ["DB_PASSWORD"]

    # AND PostgreSQL holds it sealed, opening to the value with the deployment's key
    [(stored,)] = _sql("SELECT secret_env FROM containers WHERE id = %s", (container["id"],))
    assert secret not in stored
    assert open_env(get_function_settings(), stored) == {"DB_PASSWORD": secret}

    # AND the event history shows it going from pending to running, newest first, in pages
    events = client.get(f"/api/containers/{container['id']}/events", headers=user.auth_headers)
    assert events.status_code == 200, events.text
    statuses = [event["status"] for event in events.json()["items"]]
    assert statuses[0] == "running" and statuses[-1] == "pending", statuses
    first = client.get(f"/api/containers/{container['id']}/events?limit=1", headers=user.auth_headers).json()
    assert first["items"] == events.json()["items"][:1] and first["next_cursor"]
    second = client.get(
        f"/api/containers/{container['id']}/events",
        params={"limit": 1, "cursor": first["next_cursor"]},
        headers=user.auth_headers,
    ).json()
    assert second["items"] == events.json()["items"][1:2]

    # AND no answer of any route carries the value
    for path in (
        f"/api/containers/{container['id']}",
        "/api/containers",
        f"/api/containers/{container['id']}/events",
        f"/api/containers/{container['id']}/logs",
    ):
        answer = client.get(path, headers=user.auth_headers)
        assert answer.status_code == 200, (path, answer.text)
        assert secret not in answer.text, path
    deleted = client.delete(f"/api/containers/{container['id']}", headers=user.auth_headers)
    assert deleted.status_code == 202 and secret not in deleted.text
    _wait_for(client, user, container["id"], "deleted")

    # AND neither the gateway (with the function) nor the host worker that started it logged the value
    assert secret not in gateway.access_log()
    assert secret not in worker.log()


def test_bad_secret_env_and_health_checks_are_a_clear_422(client: httpx.Client) -> None:
    user = sign_up_and_in(client)
    good = {"image_id": str(uuid.uuid4()), "name": "ok", "ports": [{"container_port": 8080}]}
    for change in (
        {"env": {"TOKEN": "a"}, "secret_env": {"TOKEN": "hidden-value"}},
        {"secret_env": {"BAD NAME": "hidden-value"}},
        {"health_check": {"type": "udp"}},
        {"health_check": {"type": "http", "path": "no-slash"}},
        {"health_check": {"type": "tcp", "path": "/"}},
        {"health_check": {"type": "http", "interval_seconds": 5, "timeout_seconds": 6}},
        {"health_check": {"type": "http"}, "ports": []},
        {"health_check": {"type": "http", "shell": "curl"}},
    ):
        answer = client.post("/api/containers", json={**good, **change}, headers=user.auth_headers)
        assert answer.status_code == 422, (change, answer.text)
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error"]["message"] and "hidden-value" not in answer.text


def test_logs_are_read_from_the_shipped_lines(client: httpx.Client) -> None:
    # GIVEN a user's container that ran and was deleted (a tombstone), with lines its host worker shipped
    user = sign_up_and_in(client)
    other = sign_up_and_in(client)
    image_id, container_id = str(uuid.uuid4()), str(uuid.uuid4())
    _sql(
        "INSERT INTO images (id, owner_id, name, tag, object_key, status) VALUES (%s, %s, 'web', 'v1', 'k', 'ready')",
        (image_id, user.id),
    )
    _sql(
        "INSERT INTO containers (id, owner_id, image_id, name, cpu, memory_mb, status, desired_state) "
        "VALUES (%s, %s, %s, 'gone', 0.5, 256, 'deleted', 'deleted')",
        (container_id, user.id, image_id),
    )
    start = datetime(2031, 6, 1, tzinfo=UTC)
    for i in range(5):
        _sql(
            "INSERT INTO container_logs (container_id, ts, stream, text) VALUES (%s, %s, %s, %s)",
            (container_id, start + timedelta(seconds=i), "stderr" if i == 4 else "stdout", f"line {i}"),
        )
    path = f"/api/containers/{container_id}/logs"

    # THEN the owner reads them through the gateway: tail, since (unix seconds or RFC 3339), oldest first
    lines = client.get(path, params={"tail": 2}, headers=user.auth_headers)
    assert lines.status_code == 200, lines.text
    assert [(line["text"], line["stream"]) for line in lines.json()["lines"]] == [
        ("line 3", "stdout"),
        ("line 4", "stderr"),
    ]
    since = start + timedelta(seconds=2)
    for value in (str(int(since.timestamp())), "2031-06-01T02:00:02+02:00"):
        answer = client.get(path, params={"since": value}, headers=user.auth_headers)
        assert [line["text"] for line in answer.json()["lines"]] == ["line 2", "line 3", "line 4"], value

    # AND bad parameters are a 422 JSON error, and another tenant gets 404
    for params in ({"since": "last tuesday"}, {"tail": 0}, {"tail": 5001}):
        answer = client.get(path, params=params, headers=user.auth_headers)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.json()["error"]["code"] == "validation_failed"
    refused = client.get(path, headers=other.auth_headers)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    _sql("DELETE FROM users WHERE id = ANY(%s)", ([user.id, other.id],))
