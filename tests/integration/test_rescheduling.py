"""Host loss against the real PostgreSQL, SQS (moto server) and Docker: the containers of a host that
stopped heartbeating become lost and move to a live host (new ports, a job on its queue), where a real
worker runs them; concurrent sweeps move a container once; with no live host a container stays lost; and
an image a host does not have is fetched onto it from object storage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from shared.db import Database, get_database
from shared.host_ports import allocate_port
from shared.host_store import HostStore
from shared.jobs import SqsHostJobQueues, ensure_host_queue, host_queue_name
from shared.registry import Instance, Namespace
from shared.registry.postgres import PostgresRegistry
from shared.storage import aws_client
from tests.conftest import RUN_ID, start_worker, stop_process
from tests.support.docker_containers import remove_labelled
from tests.support.waiting import wait_until, wait_until_async
from worker.container_runtime import CONTAINER_ID_LABEL, OWNER_LABEL
from worker.hosts import mark_stale_hosts_down, register_host
from worker.image_jobs import JobFailed, ensure_local_image
from worker.main import build_worker
from worker.rescheduling import lost_reason, reschedule_containers_of_down_hosts
from worker.settings import WorkerSettings

pytestmark = pytest.mark.docker

WEB_PORT = 8080


@pytest.fixture
async def database() -> Database:
    return get_database(os.environ["BERTH_DATABASE_URL"])


@pytest.fixture
def store(database: Database) -> HostStore:
    return HostStore(database)


@pytest.fixture(scope="module")
def web_image(docker_client: docker.DockerClient) -> Iterator[Any]:
    """The "web" test image, built here (no registry); tenants' references to it are tagged per test."""
    from tests.support.docker_images import build_test_image

    tag = f"berth-test/web:{RUN_ID}-rescheduling"
    image = build_test_image(docker_client, "web", tag)
    yield image
    with contextlib.suppress(docker.errors.APIError):
        docker_client.images.remove(tag)


@dataclass
class Tenant:
    """A user of the test's own with one ready image (a local tag of the web test image)."""

    owner_id: str
    image_id: str
    reference: str
    docker_image_id: str
    containers: list[str] = field(default_factory=list)


async def create_tenant(database: Database, docker_client: docker.DockerClient, image: Any) -> Tenant:
    owner = str(uuid.uuid4())
    repository, tag = f"berth/{owner}/web", "1"
    image.tag(repository, tag)
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')", (owner, f"{owner}@example.com")
        )
        cursor = await conn.execute(
            "INSERT INTO images (owner_id, name, tag, status, object_key, docker_image_id, reference) "
            "VALUES (%s, 'web', %s, 'ready', %s, %s, %s) RETURNING id",
            (owner, tag, f"uploads/{owner}/web.tar", image.id, f"{repository}:{tag}"),
        )
        row = await cursor.fetchone()
    assert row is not None
    return Tenant(owner, str(row["id"]), f"{repository}:{tag}", image.id)


async def remove_tenant(database: Database, docker_client: docker.DockerClient, tenant: Tenant) -> None:
    remove_labelled(docker_client, OWNER_LABEL, tenant.owner_id)
    async with database.transaction() as conn:
        # The user's containers, images and events go with it; container ports are owned by id, not by user.
        await conn.execute(
            "DELETE FROM port_allocations WHERE owner_kind = 'container' AND owner_id = ANY(%s::uuid[])",
            (tenant.containers,),
        )
        await conn.execute("DELETE FROM users WHERE id = %s", (tenant.owner_id,))
    with contextlib.suppress(docker.errors.APIError):
        docker_client.images.remove(tenant.reference)


@pytest.fixture
async def tenant(database: Database, docker_client: docker.DockerClient, web_image: Any) -> AsyncIterator[Tenant]:
    created = await create_tenant(database, docker_client, web_image)
    yield created
    await remove_tenant(database, docker_client, created)


@pytest.fixture
async def placement(database: Database) -> AsyncIterator[Callable[[str], str]]:
    """Host ids of the test's own, and a placement that sees only them: hosts up before the test (another
    test's worker, say) drain while it runs and come back up afterwards. The test's hosts (and, by cascade,
    their ports) are removed at the end, after the tenants' containers."""
    async with database.transaction() as conn:
        cursor = await conn.execute("UPDATE hosts SET status = 'draining' WHERE status = 'up' RETURNING id")
        drained = [row["id"] for row in await cursor.fetchall()]
    created: list[str] = []

    def new_id(role: str) -> str:
        created.append(f"test-{role}-{secrets.token_hex(5)}")
        return created[-1]

    yield new_id
    async with database.transaction() as conn:
        await conn.execute("UPDATE hosts SET status = 'up' WHERE id = ANY(%s) AND status = 'draining'", (drained,))
        await conn.execute("DELETE FROM containers WHERE host_id = ANY(%s)", (created,))
        await conn.execute("DELETE FROM hosts WHERE id = ANY(%s)", (created,))
    sqs = aws_client("sqs", WorkerSettings())
    for host_id in created:
        with contextlib.suppress(sqs.exceptions.QueueDoesNotExist):
            url = sqs.get_queue_url(QueueName=host_queue_name(WorkerSettings(), host_id))["QueueUrl"]
            sqs.delete_queue(QueueUrl=url)


async def place_container(
    database: Database,
    store: HostStore,
    tenant: Tenant,
    host_id: str,
    *,
    desired: str = "running",
    status: str = "running",
    ports: int = 1,
) -> str:
    """A container record on ``host_id`` with ``ports`` allocated there, as the scheduler would make it."""
    container_id = uuid.uuid4()
    tenant.containers.append(str(container_id))
    allocated = []
    for index in range(ports):
        host_port = await allocate_port(store, host_id, "container", container_id, WorkerSettings().host_port_range)
        allocated.append(
            {"container_port": WEB_PORT + index, "protocol": "tcp", "host_ip": "127.0.0.1", "host_port": host_port}
        )
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO containers (id, owner_id, image_id, name, ports, cpu, memory_mb, host_id, desired_state, "
            "status, docker_id) VALUES (%s, %s, %s, %s, %s::jsonb, 0.5, 64, %s, %s, %s, %s)",
            (
                container_id,
                tenant.owner_id,
                tenant.image_id,
                f"c-{secrets.token_hex(4)}",
                json.dumps(allocated),
                host_id,
                desired,
                status,
                "gone-with-its-host" if status == "running" else None,
            ),
        )
    return str(container_id)


async def container(database: Database, container_id: str) -> dict[str, Any]:
    async with database.transaction() as conn:
        cursor = await conn.execute(
            "SELECT host_id, status, desired_state, reason, ports, docker_id FROM containers WHERE id = %s",
            (container_id,),
        )
        row = await cursor.fetchone()
    assert row is not None
    return row


async def events(database: Database, container_id: str) -> list[tuple[str, str | None]]:
    async with database.transaction() as conn:
        cursor = await conn.execute(
            "SELECT status, reason FROM container_events WHERE container_id = %s ORDER BY id", (container_id,)
        )
        return [(row["status"], row["reason"]) for row in await cursor.fetchall()]


async def go_silent(database: Database, host_id: str, seconds: int = 300) -> None:
    async with database.transaction() as conn:
        await conn.execute(
            "UPDATE hosts SET heartbeat_at = now() - make_interval(secs => %s) WHERE id = %s", (seconds, host_id)
        )


async def live_host(store: HostStore, host_id: str) -> None:
    """A registered, heartbeating host with a job queue, but no worker: its jobs stay on its queue."""
    await asyncio.to_thread(ensure_host_queue, WorkerSettings(), host_id)
    await register_host(store, host_id, "127.0.0.1", 2, 2048)


def queued_jobs(host_id: str) -> list[dict[str, Any]]:
    """Every job waiting on the host's queue (received and left to come back after a short while)."""
    sqs = aws_client("sqs", WorkerSettings())
    url = sqs.get_queue_url(QueueName=host_queue_name(WorkerSettings(), host_id))["QueueUrl"]
    jobs: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30)
        messages = answer.get("Messages", [])
        if not messages:
            return jobs
        jobs.extend(json.loads(message["Body"]) for message in messages)


def sweep_settings() -> WorkerSettings:
    return WorkerSettings(host_down_after_seconds=30)


# Another worker of the same test run (the e2e tests' session worker) may sweep at the same time as the
# test: what a sweep did is checked in the database and on the queues, which any sweeper changes alike,
# rather than in the results of the test's own sweeps.


async def test_two_sweeps_at_once_move_each_container_once(
    database: Database, store: HostStore, tenant: Tenant, placement: Callable[[str], str]
) -> None:
    # GIVEN a host with five containers (two ports each) that stopped heartbeating, and one live host
    dead, alive = placement("dead"), placement("alive")
    await register_host(store, dead, "127.0.0.1", 2, 2048)
    ids = [await place_container(database, store, tenant, dead, ports=2) for _ in range(5)]
    old_ports = {container_id: await store.ports_of("container", uuid.UUID(container_id)) for container_id in ids}
    await live_host(store, alive)
    await go_silent(database, dead)
    await mark_stale_hosts_down(store, 30)
    assert (await store.get(dead) or {}).get("status") == "down"

    # WHEN three workers sweep at the same time
    queues = SqsHostJobQueues(sweep_settings())
    results = await asyncio.gather(
        *(reschedule_containers_of_down_hosts(HostStore(database), queues, sweep_settings()) for _ in range(3))
    )

    # THEN every container was marked lost once and moved once, to the live host
    moved = [container_id for result in results for container_id in result.moved]
    assert len(moved) == len(set(moved)) and set(moved) <= set(ids)
    for container_id in ids:
        row = await container(database, container_id)
        assert (row["host_id"], row["status"], row["docker_id"]) == (alive, "pending", None)
        assert [status for status, _ in await events(database, container_id)] == ["running", "lost", "pending"]
        assert (await events(database, container_id))[1][1] == lost_reason(dead)
        # AND its ports were given back on the dead host and allocated anew on the live one, as recorded
        allocated = await store.ports_of("container", uuid.UUID(container_id))
        assert [host for host, _ in allocated] == [alive, alive]
        assert sorted(port["host_port"] for port in row["ports"]) == [port for _, port in allocated]
        assert [port["container_port"] for port in row["ports"]] == [WEB_PORT, WEB_PORT + 1]
        assert all(port["host_ip"] == "127.0.0.1" for port in row["ports"])
        assert all(host == dead for host, _ in old_ports[container_id])
    # AND the live host's queue got exactly one reconcile job per container
    jobs = queued_jobs(alive)
    assert sorted(job["payload"]["container_id"] for job in jobs) == sorted(ids)
    assert {job["kind"] for job in jobs} == {"container.reconcile"}

    # AND a later sweep finds nothing left to do
    again = await reschedule_containers_of_down_hosts(store, queues, sweep_settings())
    assert (again.lost, again.moved, again.deleted, again.stranded) == ([], {}, [], [])


async def test_with_no_live_host_a_container_stays_lost_until_one_appears(
    database: Database, store: HostStore, tenant: Tenant, placement: Callable[[str], str]
) -> None:
    # GIVEN the only host, with a container, stopped heartbeating
    dead = placement("dead")
    await register_host(store, dead, "127.0.0.1", 2, 2048)
    container_id = await place_container(database, store, tenant, dead)
    ports = await store.ports_of("container", uuid.UUID(container_id))
    await go_silent(database, dead)
    await mark_stale_hosts_down(store, 30)
    queues = SqsHostJobQueues(sweep_settings())

    # WHEN sweeps run with no live host
    first = await reschedule_containers_of_down_hosts(store, queues, sweep_settings())
    second = await reschedule_containers_of_down_hosts(store, queues, sweep_settings())

    # THEN it is lost, says why, and stays where it was with its ports; being lost is recorded once
    assert (first.stranded, second.stranded) == ([container_id], [container_id])
    row = await container(database, container_id)
    assert (row["host_id"], row["status"], row["reason"]) == (dead, "lost", lost_reason(dead))
    assert await store.ports_of("container", uuid.UUID(container_id)) == ports
    assert [status for status, _ in await events(database, container_id)] == ["running", "lost"]

    # WHEN a host comes up, THEN the next sweep moves it there
    alive = placement("alive")
    await live_host(store, alive)
    await reschedule_containers_of_down_hosts(store, queues, sweep_settings())
    moved = await container(database, container_id)
    assert (moved["host_id"], moved["status"]) == (alive, "pending")
    assert [job["payload"]["container_id"] for job in queued_jobs(alive)] == [container_id]


async def test_a_lost_container_leaves_the_registry_at_once(
    database: Database, store: HostStore, tenant: Tenant, placement: Callable[[str], str], test_database: str
) -> None:
    # GIVEN a container registered as a passing instance on a host that stopped heartbeating
    dead = placement("dead")
    await register_host(store, dead, "127.0.0.1", 2, 2048)
    container_id = await place_container(database, store, tenant, dead)
    registry = PostgresRegistry(test_database)
    await registry.register(
        Instance(
            id=container_id,
            namespace=Namespace.CLIENT_CONTAINERS,
            service="lost-svc",
            owner_id=uuid.UUID(tenant.owner_id),
            address="127.0.0.1",
            port=30999,
        )
    )
    await go_silent(database, dead)
    await mark_stale_hosts_down(store, 30)

    # WHEN a sweep marks it lost
    swept = await reschedule_containers_of_down_hosts(
        store, SqsHostJobQueues(sweep_settings()), sweep_settings(), registry
    )

    # THEN no instance of it is left to route to (it does not wait for its TTL to lapse)
    assert swept.lost == [container_id]
    assert await registry.instances(Namespace.CLIENT_CONTAINERS, "lost-svc") == []


async def test_deleted_containers_settle_and_a_hosts_own_lost_ones_go_back_to_it(
    database: Database, store: HostStore, tenant: Tenant, placement: Callable[[str], str]
) -> None:
    # GIVEN a down host with a container its tenant deleted, containers (one wanted running, one stopped)
    # that became lost when their host went down, and a live host
    dead, back, alive = placement("dead"), placement("back"), placement("alive")
    await register_host(store, dead, "127.0.0.1", 2, 2048)
    await live_host(store, back)
    deleted = await place_container(database, store, tenant, dead, desired="deleted", status="stopping")
    returning = await place_container(database, store, tenant, back)
    resting = await place_container(database, store, tenant, back, desired="stopped", status="stopped")
    ports = await store.ports_of("container", uuid.UUID(returning))
    for host_id in (dead, back):
        await go_silent(database, host_id)
    await mark_stale_hosts_down(store, 30)
    for container_id in (returning, resting):
        await store.mark_container_lost(container_id, back, lost_reason(back))
        assert (await container(database, container_id))["status"] == "lost"
    # AND the lost containers' host heartbeats again before any sweep moved them; then a host comes up
    assert await store.touch(back)
    await live_host(store, alive)

    # WHEN a sweep runs
    queues = SqsHostJobQueues(sweep_settings())
    await reschedule_containers_of_down_hosts(store, queues, sweep_settings())

    # THEN the deleted one is settled as deleted, its ports freed, and moved nowhere
    gone = await container(database, deleted)
    assert (gone["status"], gone["host_id"], gone["docker_id"]) == ("deleted", dead, None)
    assert await store.ports_of("container", uuid.UUID(deleted)) == []
    # AND the lost ones stay on their host, with their ports, back to what their tenant wants, each with a
    # job on that host's queue (none for the live host)
    for container_id, status in ((returning, "pending"), (resting, "stopped")):
        row = await container(database, container_id)
        assert (row["host_id"], row["status"], row["reason"]) == (back, status, f"host {back} is heartbeating again")
    assert await store.ports_of("container", uuid.UUID(returning)) == ports
    assert sorted(job["payload"]["container_id"] for job in queued_jobs(back)) == sorted([returning, resting])
    assert queued_jobs(alive) == []
    # AND a second sweep hands nothing back twice
    await reschedule_containers_of_down_hosts(store, queues, sweep_settings())
    assert queued_jobs(back) == []


async def test_a_down_hosts_containers_end_up_on_a_live_worker_host(
    database: Database,
    store: HostStore,
    tenant: Tenant,
    placement: Callable[[str], str],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    # GIVEN a host, silent for minutes, with a running container and a stopped one, each with a port
    dead, alive = placement("dead"), placement("alive")
    await register_host(store, dead, "127.0.0.1", 2, 2048)
    running = await place_container(database, store, tenant, dead)
    stopped = await place_container(database, store, tenant, dead, desired="stopped", status="stopped")
    await go_silent(database, dead)

    # WHEN a worker starts on another host (its own cluster id: concurrent test runs share Docker)
    worker = start_worker(
        tmp_path,
        {
            "BERTH_HOST_ID": alive,
            "BERTH_HOST_HEARTBEAT_SECONDS": "0.5",
            "BERTH_HOST_DOWN_AFTER_SECONDS": "10",
            "BERTH_CLUSTER_ID": f"test-{RUN_ID}",
        },
    )
    try:
        # THEN it marks the silent host down, and the running container comes up on the worker's host
        row = await _wait_for_status(database, running, "running", worker.log, host_id=alive)
        assert [status for status, _ in await events(database, running)][:3] == ["running", "lost", "pending"]
        [port] = row["ports"]
        assert (port["container_port"], port["host_ip"]) == (WEB_PORT, "127.0.0.1")
        assert await store.ports_of("container", uuid.UUID(running)) == [(alive, port["host_port"])]
        [docker_container] = docker_client.containers.list(
            ignore_removed=True, filters={"label": f"{CONTAINER_ID_LABEL}={running}"}
        )
        assert docker_container.id == row["docker_id"]
        assert _whoami(port["host_port"]).status_code == 200

        # AND the stopped one moved too and stays stopped: its job ran, and Docker has no container of it
        await _wait_until(lambda: _host_queue_drained(alive), worker.log)
        moved = await container(database, stopped)
        assert (moved["host_id"], moved["status"]) == (alive, "stopped")
        assert [status for status, _ in await events(database, stopped)][:3] == ["stopped", "lost", "stopped"]
        assert (
            docker_client.containers.list(
                ignore_removed=True, all=True, filters={"label": f"{CONTAINER_ID_LABEL}={stopped}"}
            )
            == []
        )
        assert [host for host, _ in await store.ports_of("container", uuid.UUID(stopped))] == [alive]
        assert (await store.get(dead) or {}).get("status") == "down"
    finally:
        stop_process(worker.process)


async def test_an_image_missing_on_this_host_is_fetched_from_object_storage(
    database: Database, docker_client: docker.DockerClient, findings_archive: Path
) -> None:
    # GIVEN an image whose archive is in object storage, and a host that does not have it
    settings = WorkerSettings()
    context = build_worker(settings).context
    owner, key = str(uuid.uuid4()), f"uploads/test-{secrets.token_hex(4)}/findings.tar"
    reference = f"berth/{owner}/findings:1"
    await asyncio.to_thread(aws_client("s3", settings).upload_file, str(findings_archive), settings.images_bucket, key)
    image_row = {"reference": reference, "docker_image_id": _config_id(findings_archive), "object_key": key}
    assert await context.runtime.image_id(reference) is None
    try:
        # WHEN a job needs it here
        answer = await ensure_local_image(context, image_row)

        # THEN it was loaded and tagged as the recorded image
        assert answer == reference
        assert await context.runtime.image_id(reference) == image_row["docker_image_id"]

        # AND once here, it is not fetched again (the archive is no longer even needed)
        assert await ensure_local_image(context, {**image_row, "object_key": "uploads/no-such-archive"}) == reference

        # AND an archive that does not load as the recorded image is refused, and tagged nowhere
        other = f"berth/{owner}/other:1"
        with pytest.raises(JobFailed, match="no longer matches"):
            await ensure_local_image(
                context, {"reference": other, "docker_image_id": "sha256:" + "0" * 64, "object_key": key}
            )
        assert await context.runtime.image_id(other) is None
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(reference)
        aws_client("s3", settings).delete_object(Bucket=settings.images_bucket, Key=key)


def _config_id(archive: Path) -> str:
    """The image id (its config's digest) an archive made by `docker save` loads as."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        config = json.load(member)[0]["Config"]
    return "sha256:" + config.rsplit("/", 1)[-1].removesuffix(".json")


async def _wait_until(check: Callable[[], bool], log: Callable[[], str], timeout: float = 60) -> None:
    await wait_until_async(
        lambda: asyncio.to_thread(check),
        timeout=timeout,
        interval=0.3,
        message=lambda: "timed out; worker log:\n" + log()[-4000:],
    )


async def _wait_for_status(
    database: Database, container_id: str, status: str, log: Callable[[], str], *, host_id: str, timeout: float = 60
) -> dict[str, Any]:
    """The container's record once it is ``status`` on ``host_id``."""

    async def in_status() -> dict[str, Any] | None:
        row = await container(database, container_id)
        assert row["status"] != "failed", row
        return row if (row["host_id"], row["status"]) == (host_id, status) else None

    return await wait_until_async(
        in_status,
        timeout=timeout,
        interval=0.3,
        message=lambda: f"{container_id} is not {status} on {host_id}; worker log:\n" + log()[-4000:],
    )


def _host_queue_drained(host_id: str) -> bool:
    """No job on the host's queue, waiting or being worked on."""
    sqs = aws_client("sqs", WorkerSettings())
    url = sqs.get_queue_url(QueueName=host_queue_name(WorkerSettings(), host_id))["QueueUrl"]
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return (
        attributes["ApproximateNumberOfMessages"] == "0" and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def _whoami(port: int, timeout: float = 15) -> httpx.Response:
    return wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/cgi-bin/whoami", timeout=3),
        timeout=timeout,
        interval=0.3,
        ignoring=(httpx.HTTPError,),
        message=f"nothing answered on port {port}",
    )
