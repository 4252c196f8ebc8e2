"""A container's life across host worker processes (`berth worker`, real SQS, PostgreSQL and Docker): a worker
killed while it creates a container leaves exactly one container once another worker takes over, and a worker
stopped with SIGTERM leaves its customers' containers running for the next worker to adopt."""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
from psycopg.rows import dict_row

from cli.local_stack import LocalStackSettings, ensure_aws_resources
from shared.jobs import Job
from shared.storage import aws_client
from tests.conftest import RUN_ID, RunningWorker, start_worker, stop_process
from tests.support.docker_containers import labelled, remove_labelled
from tests.support.docker_images import built_test_image
from tests.support.waiting import wait_until
from worker.container_runtime import CLUSTER_LABEL, CONTAINER_ID_LABEL
from worker.settings import WorkerSettings

pytestmark = pytest.mark.docker

RECONCILE_INTERVAL_SECONDS = 0.5


@pytest.fixture(scope="module")
def web_image(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    tag = f"berth-test/web:lifecycle-{RUN_ID}"
    with built_test_image(docker_client, "web", tag) as image:
        yield {"reference": tag, "id": image.id}


@pytest.fixture
def place(
    test_database: str, local_aws: str, web_image: dict[str, str], docker_client: docker.DockerClient
) -> Iterator[dict[str, Any]]:
    """A host of the test's own (its worker's id), a job queue and cluster of its own, a user with the ready web
    image; afterwards the records, the queues and the cluster's Docker containers are removed."""
    host_id = f"test-host-{secrets.token_hex(6)}"
    cluster_id = f"test-{RUN_ID}-{secrets.token_hex(3)}"
    queue = f"jobs-{secrets.token_hex(4)}"
    urls = ensure_aws_resources(LocalStackSettings(jobs_queue=queue, jobs_dead_letter_queue=queue + "-dlq"), local_aws)
    user_id, image_id = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(test_database) as conn:
        conn.execute(
            "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 2, 2048)",
            (host_id,),
        )
        conn.execute(
            "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')",
            (user_id, f"life-{user_id}@example.com"),
        )
        conn.execute(
            "INSERT INTO images (id, owner_id, name, tag, object_key, status, reference, docker_image_id) "
            "VALUES (%s, %s, 'web', 'v1', 'k', 'ready', %s, %s)",
            (image_id, user_id, web_image["reference"], web_image["id"]),
        )
    env = {
        "BERTH_HOST_ID": host_id,
        "BERTH_CLUSTER_ID": cluster_id,
        "BERTH_JOBS_QUEUE": queue,
        "BERTH_JOBS_DEAD_LETTER_QUEUE": queue + "-dlq",
        "BERTH_WORKER_RECONCILE_INTERVAL_SECONDS": str(RECONCILE_INTERVAL_SECONDS),
        "BERTH_WORKER_RESTART_BACKOFF_BASE_SECONDS": "0.5",
    }
    sqs = aws_client("sqs", WorkerSettings())
    yield {
        "host_id": host_id,
        "cluster_id": cluster_id,
        "user_id": user_id,
        "image_id": image_id,
        "env": env,
        "sqs": sqs,
        "queue_url": urls["jobs_queue"],
        "database": test_database,
    }
    remove_labelled(docker_client, CLUSTER_LABEL, cluster_id, volumes=True)
    with psycopg.connect(test_database) as conn:
        conn.execute("DELETE FROM containers WHERE owner_id = %s", (user_id,))
        conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
        conn.execute("DELETE FROM hosts WHERE id = %s", (host_id,))
    # The queue, its dead-letter queue and the host queue the worker made for itself.
    for url in sqs.list_queues(QueueNamePrefix=queue).get("QueueUrls", []):
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def workers() -> Iterator[list[RunningWorker]]:
    """Worker processes the test started; stopped (if still alive) afterwards."""
    started: list[RunningWorker] = []
    yield started
    for running in started:
        stop_process(running.process)


def _start(place: dict[str, Any], workers: list[RunningWorker], tmp_path: Path) -> RunningWorker:
    running = start_worker(tmp_path, place["env"])
    workers.append(running)
    return running


def _deploy(place: dict[str, Any], **fields: Any) -> str:
    """A record placed on the test's host and its `container.reconcile` job, as the containers function does."""
    container_id = str(uuid.uuid4())
    with psycopg.connect(place["database"]) as conn:
        conn.execute(
            "INSERT INTO containers (id, owner_id, image_id, name, command, ports, cpu, memory_mb, restart_policy, "
            "health_check, host_id) VALUES (%s, %s, %s, %s, %s, '[]', 0.5, 64, %s, %s, %s)",
            (
                container_id,
                place["user_id"],
                place["image_id"],
                f"life-{secrets.token_hex(4)}",
                json.dumps(fields["command"]) if fields.get("command") else None,
                fields.get("restart_policy", "no"),
                json.dumps(fields["health_check"]) if fields.get("health_check") else None,
                place["host_id"],
            ),
        )
    job = Job("container.reconcile", {"container_id": container_id})
    place["sqs"].send_message(QueueUrl=place["queue_url"], MessageBody=job.encode())
    return container_id


def _record(place: dict[str, Any], container_id: str) -> dict[str, Any]:
    with psycopg.connect(place["database"], row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM containers WHERE id = %s", (container_id,)).fetchone()
    assert row is not None
    return row


def _wait(
    what: str, read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60, every: float = 0.2
) -> Any:
    """Until ``done(read())``; that last value read."""

    def reached() -> tuple[Any] | None:
        value = read()
        return (value,) if done(value) else None  # wrapped: a falsy value may be the awaited one

    return wait_until(reached, timeout=timeout, interval=every, message=f"{what} did not happen")[0]


def _labelled(docker_client: docker.DockerClient, container_id: str) -> list[Any]:
    return labelled(docker_client, CONTAINER_ID_LABEL, container_id)


def _docker_state(docker_client: docker.DockerClient, docker_id: str) -> dict[str, Any]:
    state: dict[str, Any] = docker_client.api.inspect_container(docker_id)["State"]
    return state


def test_a_worker_killed_while_creating_leaves_exactly_one_container(
    place: dict[str, Any], workers: list[RunningWorker], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # GIVEN a worker doing the job of a container that serves only after 3 s (its health check waits for it)
    first = _start(place, workers, tmp_path)
    container_id = _deploy(
        place,
        command=["sh", "-c", "sleep 3; exec httpd -f -p 8080 -h /srv/www"],
        health_check={
            "type": "tcp",
            "port": 8080,
            "interval_seconds": 1,
            "timeout_seconds": 1,
            "retries": 3,
            "start_period_seconds": 20,
        },
    )

    # WHEN the worker is killed (SIGKILL: no drain) as soon as its container exists in Docker
    _wait("the container's creation", lambda: _labelled(docker_client, container_id), bool, every=0.02)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    at_kill = _record(place, container_id)
    assert at_kill["status"] in ("creating", "starting"), at_kill  # the job was cut off mid-way

    # AND another worker of the same host starts
    second = _start(place, workers, tmp_path)

    # THEN the container ends up running, and Docker holds exactly one container for the record: that one
    running = _wait(
        "running", lambda: _record(place, container_id), lambda row: row["status"] in ("running", "unhealthy", "failed")
    )
    assert running["status"] == "running", (running, second.log())
    [container] = _labelled(docker_client, container_id)
    assert container.id == running["docker_id"]
    assert _docker_state(docker_client, container.id)["Status"] == "running"


def test_sigterm_leaves_containers_running_and_the_next_worker_adopts_them(
    place: dict[str, Any], workers: list[RunningWorker], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # GIVEN a worker running a customer container
    first = _start(place, workers, tmp_path)
    container_id = _deploy(place, restart_policy="always")
    running = _wait("running", lambda: _record(place, container_id), lambda row: row["status"] == "running")
    docker_id = running["docker_id"]
    started_at = _docker_state(docker_client, docker_id)["StartedAt"]

    # WHEN the worker gets SIGTERM THEN it exits cleanly and the container keeps running, untouched
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=30) == 0, first.log()
    state = _docker_state(docker_client, docker_id)
    assert (state["Status"], state["StartedAt"]) == ("running", started_at)

    # WHEN a new worker starts and reconciles a few rounds
    second = _start(place, workers, tmp_path)
    _wait("the reconciler's start", second.log, lambda log: "reconciler started" in log, timeout=30)
    # Part of the check: nothing may change while rounds pass, and no event marks a round, so let four pass.
    time.sleep(4 * RECONCILE_INTERVAL_SECONDS)

    # THEN it adopted the same container: not restarted, not duplicated, still recorded running
    after = _record(place, container_id)
    assert (after["status"], after["docker_id"], after["restart_count"]) == ("running", docker_id, 0)
    assert [container.id for container in _labelled(docker_client, container_id)] == [docker_id]
    assert _docker_state(docker_client, docker_id)["StartedAt"] == started_at

    # AND it looks after it: killed outside Berth, the container is restarted under its policy
    docker_client.api.kill(docker_id)
    restarted = _wait(
        "the restart",
        lambda: _record(place, container_id),
        lambda row: row["status"] == "running" and row["restart_count"] == 1,
    )
    assert (restarted["docker_id"], restarted["exit_code"]) == (docker_id, 137)
    assert _docker_state(docker_client, docker_id)["Status"] == "running"

    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=30) == 0, second.log()
    assert _docker_state(docker_client, docker_id)["Status"] == "running"
