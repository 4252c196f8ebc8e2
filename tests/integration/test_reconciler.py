"""The host worker's reconciler and container job against the real Docker Engine and PostgreSQL: crashed
containers restart as their policy says with a growing backoff, health checks run by the worker decide
running or unhealthy, lost jobs are repaired, orphans of this cluster are removed after the grace period,
and a container's secret environment reaches it while unreadable secrets fail the job clearly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import docker
import httpx
import pytest
from pydantic import SecretStr

from shared.db import Database, get_database
from shared.host_ports import allocate_port
from shared.host_store import HostStore
from shared.secrets import seal_env
from shared.storage import get_object_store
from tests.conftest import RUN_ID
from tests.support.docker_containers import remove_labelled
from tests.support.docker_images import built_test_image
from tests.support.waiting import wait_until_async
from worker.container_jobs import CUSTOMER_NETWORK, reconcile_container
from worker.container_runtime import CLUSTER_LABEL, CONTAINER_ID_LABEL, OWNER_LABEL, ContainerSpec, DockerRuntime
from worker.container_store import WorkerContainerStore
from worker.context import JobContext
from worker.image_jobs import JobFailed
from worker.periodic import run_periodic
from worker.reconciler import Action, Reconciler, RestartPolicy, backoff_seconds, decide, reconciler_task
from worker.settings import WorkerSettings
from worker.store import WorkerImageStore

pytestmark = pytest.mark.docker

BACKOFF_BASE = 1.0
BACKOFF_RESET = 4.0


@pytest.fixture(scope="module")
def web_image(docker_client: Any) -> Iterator[dict[str, str]]:
    tag = f"berth-test/web:reconciler-{RUN_ID}"
    with built_test_image(docker_client, "web", tag) as image:
        yield {"reference": tag, "id": image.id}


@pytest.fixture
async def database() -> Database:
    return get_database(os.environ["BERTH_DATABASE_URL"])


@pytest.fixture
async def world(database: Database, web_image: dict[str, str], docker_client: Any) -> AsyncIterator[dict[str, Any]]:
    """A host, a user with the ready web image, and a worker context for that host in a cluster of the
    test's own; afterwards every Docker container of that cluster and every record are removed."""
    host_id = f"test-host-{secrets.token_hex(6)}"
    user_id, image_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 4, 4096)",
            (host_id,),
        )
        await conn.execute(
            "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')", (user_id, f"rec-{user_id}@example.com")
        )
        await conn.execute(
            "INSERT INTO images (id, owner_id, name, tag, object_key, status, reference, docker_image_id) "
            "VALUES (%s, %s, 'web', 'v1', 'k', 'ready', %s, %s)",
            (image_id, user_id, web_image["reference"], web_image["id"]),
        )
    settings = WorkerSettings(
        host_id=host_id,
        cluster_id=f"test-{RUN_ID}-{secrets.token_hex(3)}",
        worker_reconcile_interval_seconds=0.3,
        worker_orphan_grace_seconds=1.0,
        worker_restart_backoff_base_seconds=BACKOFF_BASE,
        worker_restart_backoff_max_seconds=8.0,
        worker_restart_backoff_reset_seconds=BACKOFF_RESET,
    )
    context = JobContext(
        settings=settings,
        images=WorkerImageStore(database),
        objects=get_object_store(settings),
        runtime=DockerRuntime(timeout=60),
        containers=WorkerContainerStore(database),
        hosts=HostStore(database),
    )
    yield {"host_id": host_id, "user_id": user_id, "image_id": image_id, "settings": settings, "context": context}
    remove_labelled(docker_client, CLUSTER_LABEL, settings.cluster_id, volumes=True)
    async with database.transaction() as conn:
        await conn.execute("DELETE FROM containers WHERE owner_id = %s", (user_id,))
        await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
        await conn.execute("DELETE FROM hosts WHERE id = %s", (host_id,))


async def _record(
    database: Database,
    world: dict[str, Any],
    *,
    restart_policy: str = "no",
    health_check: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    secret_env: str | None = None,
    desired_state: str = "running",
    status: str = "pending",
    host_id: str | None = None,
) -> str:
    container_id = str(uuid.uuid4())
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO containers (id, owner_id, image_id, name, env, secret_env, ports, cpu, memory_mb, "
            "restart_policy, health_check, host_id, desired_state, status) "
            "VALUES (%s, %s, %s, %s, %s, %s, '[]', 0.5, 64, %s, %s, %s, %s, %s)",
            (
                container_id,
                world["user_id"],
                world["image_id"],
                f"c-{secrets.token_hex(4)}",
                json.dumps(env or {}),
                secret_env,
                restart_policy,
                json.dumps(health_check) if health_check is not None else None,
                host_id or world["host_id"],
                desired_state,
                status,
            ),
        )
    return container_id


async def _row(database: Database, container_id: str) -> dict[str, Any]:
    async with database.transaction() as conn:
        cursor = await conn.execute("SELECT * FROM containers WHERE id = %s", (container_id,))
        row = await cursor.fetchone()
    assert row is not None
    return row


async def _events(database: Database, container_id: str) -> list[dict[str, Any]]:
    async with database.transaction() as conn:
        cursor = await conn.execute(
            "SELECT status, desired_state, reason FROM container_events WHERE container_id = %s ORDER BY id",
            (container_id,),
        )
        return await cursor.fetchall()


async def _deployed(database: Database, world: dict[str, Any], **fields: Any) -> tuple[str, dict[str, Any]]:
    """A record converged by the container job, as a tenant's create would have it."""
    container_id = await _record(database, world, **fields)
    await reconcile_container(world["context"], {"container_id": container_id})
    return container_id, await _row(database, container_id)


def _inspect(docker_client: Any, docker_id: str) -> dict[str, Any]:
    details: dict[str, Any] = docker_client.api.inspect_container(docker_id)
    return details


async def _kill(docker_client: Any, docker_id: str) -> dict[str, Any]:
    """`docker kill` and wait until Docker reports the container exited; its state then."""
    await asyncio.to_thread(docker_client.api.kill, docker_id)
    return await _until(lambda: asyncio.to_thread(lambda: _inspect(docker_client, docker_id)["State"]), _exited)


def _exited(state: dict[str, Any]) -> bool:
    return state["Status"] == "exited"


async def _until(
    read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float = 20, every: float = 0.1
) -> Any:
    """Until ``done(await read())``; that last value read."""

    async def reached() -> tuple[Any] | None:
        value = await read()
        return (value,) if done(value) else None  # wrapped: a falsy value may be the awaited one

    return (await wait_until_async(reached, timeout=timeout, interval=every))[0]


# ------------------------------------------------------------------------------------------ decisions


@pytest.mark.parametrize(
    ("desired", "status", "idle", "docker", "expected"),
    [
        ("running", "running", 0, "running", Action.CHECK_HEALTH),
        ("running", "unhealthy", 0, "running", Action.CHECK_HEALTH),
        ("running", "running", 0, "exited", Action.CRASHED),
        ("running", "failed", 0, "exited", Action.CRASHED),
        ("running", "stopped", 0, "exited", Action.NOTHING),
        ("running", "running", 0, None, Action.CONVERGE),
        ("running", "failed", 0, None, Action.NOTHING),
        ("running", "lost", 99, None, Action.NOTHING),
        ("running", "pending", 0, None, Action.NOTHING),
        ("running", "pending", 99, None, Action.CONVERGE),
        ("running", "creating", 99, "created", Action.CONVERGE),
        ("running", "failed", 0, "running", Action.CONVERGE),
        ("stopped", "running", 0, "running", Action.CONVERGE),
        ("stopped", "stopped", 0, "exited", Action.NOTHING),
        ("stopped", "stopping", 99, "exited", Action.CONVERGE),
        ("deleted", "running", 0, "running", Action.CONVERGE),
        ("running", "running", 0, "paused", Action.NOTHING),
    ],
)
def test_what_the_reconciler_does_about_a_container(
    desired: str, status: str, idle: float, docker: str | None, expected: Action
) -> None:
    row = {"desired_state": desired, "status": status, "idle_seconds": idle}
    assert decide(row, docker, stuck_after_seconds=10) is expected


@pytest.mark.parametrize(
    ("policy", "exit_code", "restarts", "restarted"),
    [
        ("always", 0, 50, True),
        ("always", 137, 0, True),
        ("no", 137, 0, False),
        ("no", 0, 0, False),
        ("on-failure", 1, 50, True),
        ("on-failure", 0, 0, False),
        ("on-failure:2", 137, 1, True),
        ("on-failure:2", 137, 2, False),
    ],
)
def test_restart_policies(policy: str, exit_code: int, restarts: int, restarted: bool) -> None:
    assert (RestartPolicy.parse(policy).refusal(exit_code, restarts) is None) is restarted


def test_backoff_doubles_up_to_the_cap() -> None:
    settings = WorkerSettings(worker_restart_backoff_base_seconds=0.5, worker_restart_backoff_max_seconds=3)
    assert [backoff_seconds(settings, k) for k in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff_seconds(settings, 10_000) == 3.0


# ------------------------------------------------------------------------------------------ the job


async def test_the_job_labels_the_container_and_opens_its_secret_environment(
    database: Database, world: dict[str, Any], docker_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a record with a plain and a sealed environment, one name in both (the secret wins)
    caplog.set_level("DEBUG")
    caplog.set_level("INFO", logger="worker")  # the run sets BERTH_LOG_LEVEL=WARNING; this test reads the job's lines
    settings = world["settings"]
    token = "tok-" + secrets.token_hex(4)
    sealed = seal_env(settings, {"API_TOKEN": token, "MODE": "secret"})
    container_id, row = await _deployed(database, world, env={"MODE": "plain", "PLAIN": "1"}, secret_env=sealed)

    # THEN the container runs with both, labelled with the record, its owner and this cluster
    assert row["status"] == "running" and row["reason"] is None
    details = _inspect(docker_client, row["docker_id"])
    env = dict(item.split("=", 1) for item in details["Config"]["Env"])
    assert env["PLAIN"] == "1" and env["MODE"] == "secret" and env["API_TOKEN"] == token
    assert "container running" in caplog.text and token not in caplog.text  # the job logged, never the secret
    assert details["Config"]["Labels"][CONTAINER_ID_LABEL] == container_id
    assert details["Config"]["Labels"][OWNER_LABEL] == world["user_id"]
    assert details["Config"]["Labels"][CLUSTER_LABEL] == settings.cluster_id
    assert details["HostConfig"]["RestartPolicy"]["Name"] == "no"


async def test_an_unreadable_secret_environment_fails_the_job_without_its_values(
    database: Database, world: dict[str, Any], docker_client: Any
) -> None:
    # GIVEN secrets sealed with another deployment's key
    other = world["settings"].model_copy(update={"secret_key": SecretStr("another-deployment-" + "k" * 32)})
    value = "value-" + secrets.token_hex(6)
    container_id = await _record(database, world, secret_env=seal_env(other, {"API_TOKEN": value}))

    # WHEN the job runs THEN it fails for good, saying why without the value, and creates nothing
    with pytest.raises(JobFailed, match="BERTH_SECRET_KEY") as raised:
        await reconcile_container(world["context"], {"container_id": container_id})
    assert value not in str(raised.value) and "API_TOKEN" not in str(raised.value)
    labelled = docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{CONTAINER_ID_LABEL}={container_id}"}
    )
    assert labelled == []


# ------------------------------------------------------------------------------------------ restarts


@pytest.mark.parametrize("policy", ["always", "on-failure"])
async def test_a_killed_container_is_restarted_when_its_policy_says_so(
    database: Database, world: dict[str, Any], docker_client: Any, policy: str
) -> None:
    # GIVEN a running container
    container_id, row = await _deployed(database, world, restart_policy=policy)
    docker_id = row["docker_id"]

    # WHEN it is killed outside Berth and the reconciler runs
    killed = await _kill(docker_client, docker_id)
    assert killed["ExitCode"] == 137
    await Reconciler(world["context"], world["settings"]).run_once()

    # THEN the same container runs again, the exit and the restart recorded
    after = await _row(database, container_id)
    assert after["status"] == "running", after
    assert after["docker_id"] == docker_id
    assert (after["exit_code"], after["restart_count"]) == (137, 1)
    assert after["last_restart_at"] is not None
    assert _inspect(docker_client, docker_id)["State"]["Status"] == "running"
    reasons = [event["reason"] for event in await _events(database, container_id) if event["status"] == "failed"]
    assert reasons == ["exited with code 137; restarting in 1 s (restart 1)"]


async def test_a_killed_container_under_policy_no_fails_and_stays_down(
    database: Database, world: dict[str, Any], docker_client: Any
) -> None:
    container_id, row = await _deployed(database, world, restart_policy="no")
    await _kill(docker_client, row["docker_id"])

    reconciler = Reconciler(world["context"], world["settings"])
    await reconciler.run_once()
    await reconciler.run_once()  # a second round changes nothing

    after = await _row(database, container_id)
    assert (after["status"], after["reason"], after["exit_code"]) == ("failed", "exited with code 137", 137)
    assert after["restart_count"] == 0 and after["last_restart_at"] is None
    assert _inspect(docker_client, row["docker_id"])["State"]["Status"] == "exited"
    assert [event["status"] for event in await _events(database, container_id)].count("failed") == 1


async def test_on_failure_with_a_limit_stops_restarting_at_the_limit(
    database: Database, world: dict[str, Any], docker_client: Any
) -> None:
    container_id, row = await _deployed(database, world, restart_policy="on-failure:1")
    reconciler = Reconciler(world["context"], world["settings"])
    await _kill(docker_client, row["docker_id"])
    await reconciler.run_once()
    assert (await _row(database, container_id))["status"] == "running"

    await _kill(docker_client, row["docker_id"])
    await reconciler.run_once()

    after = await _row(database, container_id)
    assert after["status"] == "failed" and after["restart_count"] == 1
    assert after["reason"] == "exited with code 137; not restarted: the on-failure limit of 1 restarts is reached"


async def test_the_backoff_grows_with_quick_crashes_and_resets_after_a_long_run(
    database: Database, world: dict[str, Any], docker_client: Any
) -> None:
    container_id, row = await _deployed(database, world, restart_policy="always")
    docker_id = row["docker_id"]
    reconciler = Reconciler(world["context"], world["settings"])
    waits = []
    for pause in (0.0, 0.0, BACKOFF_RESET + 0.5):
        # GIVEN the container ran for `pause` seconds; WHEN it crashes and the reconciler restarts it
        await asyncio.sleep(pause)  # part of the check: how long it ran decides the backoff
        await _kill(docker_client, docker_id)
        crashed = await world["context"].runtime.container_state(docker_id)
        await reconciler.run_once()
        after = await _row(database, container_id)
        assert after["status"] == "running", after
        # THEN the time from the crash to the restart is the backoff
        waits.append((after["last_restart_at"] - crashed["finished_at"]).total_seconds())

    reasons = [event["reason"] for event in await _events(database, container_id) if event["status"] == "failed"]
    assert reasons == [
        "exited with code 137; restarting in 1 s (restart 1)",
        "exited with code 137; restarting in 2 s (restart 2)",  # a quick second crash waits twice as long
        "exited with code 137; restarting in 1 s (restart 3)",  # it ran for the reset time: from the base again
    ]
    assert waits[0] >= BACKOFF_BASE and waits[1] >= 2 * BACKOFF_BASE and waits[2] >= BACKOFF_BASE, waits
    assert waits[1] > waits[0], waits


async def test_a_tenant_stop_during_the_backoff_wins(
    database: Database, world: dict[str, Any], docker_client: Any
) -> None:
    container_id, row = await _deployed(database, world, restart_policy="always")
    await _kill(docker_client, row["docker_id"])
    reconciler = Reconciler(world["context"], world["settings"])
    await reconciler.run_round()  # plans the restart and waits out the backoff in a task

    # WHEN the tenant stops it meanwhile (the function records the wish; the job converges)
    await _until(lambda: _row(database, container_id), lambda found: found["status"] == "failed")
    async with database.transaction() as conn:
        await conn.execute("UPDATE containers SET desired_state = 'stopped' WHERE id = %s", (container_id,))
    await reconcile_container(world["context"], {"container_id": container_id})
    await reconciler.settle()

    # THEN it stays stopped: the planned restart saw the new wish
    after = await _row(database, container_id)
    assert after["status"] == "stopped" and after["restart_count"] == 0
    assert _inspect(docker_client, row["docker_id"])["State"]["Status"] == "exited"


# ------------------------------------------------------------------------------------------ lost jobs


async def test_lost_jobs_are_repaired(database: Database, world: dict[str, Any], docker_client: Any) -> None:
    reconciler = Reconciler(world["context"], world["settings"])
    # GIVEN a record stuck in pending (its job was lost) and one just created (its job is on its way)
    stuck = await _record(database, world)
    fresh = await _record(database, world)
    async with database.transaction() as conn:
        await conn.execute("UPDATE containers SET updated_at = now() - interval '1 minute' WHERE id = %s", (stuck,))

    # WHEN the reconciler runs THEN the stuck one is converged to running and the fresh one left to its job
    await reconciler.run_once()
    converged = await _row(database, stuck)
    assert converged["status"] == "running" and converged["docker_id"]
    assert _inspect(docker_client, converged["docker_id"])["State"]["Status"] == "running"
    assert (await _row(database, fresh))["status"] == "pending"

    # WHEN its container is removed outside Berth THEN it is made again
    await asyncio.to_thread(docker_client.api.remove_container, converged["docker_id"], force=True)
    await reconciler.run_once()
    remade = await _row(database, stuck)
    assert remade["status"] == "running" and remade["docker_id"] != converged["docker_id"]
    assert _inspect(docker_client, remade["docker_id"])["State"]["Status"] == "running"

    # WHEN the tenant's stop job is lost THEN the reconciler stops it
    async with database.transaction() as conn:
        await conn.execute("UPDATE containers SET desired_state = 'stopped' WHERE id = %s", (stuck,))
    await reconciler.run_once()
    assert (await _row(database, stuck))["status"] == "stopped"
    assert _inspect(docker_client, remade["docker_id"])["State"]["Status"] == "exited"

    # WHEN the tenant's delete job is lost THEN the reconciler deletes it
    async with database.transaction() as conn:
        await conn.execute("UPDATE containers SET desired_state = 'deleted' WHERE id = %s", (stuck,))
    await reconciler.run_once()
    gone = await _row(database, stuck)
    assert gone["status"] == "deleted" and gone["docker_id"] is None
    assert (
        docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"{CONTAINER_ID_LABEL}={stuck}"})
        == []
    )


# ------------------------------------------------------------------------------------------ orphans


async def test_orphans_of_this_cluster_are_removed_after_the_grace(
    database: Database, world: dict[str, Any], docker_client: Any, web_image: dict[str, str]
) -> None:
    settings, runtime = world["settings"], world["context"].runtime
    other_cluster = f"other-{secrets.token_hex(3)}"
    elsewhere = f"test-host-{secrets.token_hex(6)}"
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 1, 512)",
            (elsewhere,),
        )
    moved = await _record(database, world, host_id=elsewhere, status="running")
    kept, _ = await _deployed(database, world)
    await runtime.ensure_network(CUSTOMER_NETWORK)

    async def labelled(record_id: str, cluster: str) -> str:
        spec = ContainerSpec(
            name=f"berth-test-orphan-{secrets.token_hex(4)}",
            image=web_image["reference"],
            network=CUSTOMER_NETWORK,
            labels={CONTAINER_ID_LABEL: record_id, OWNER_LABEL: world["user_id"], CLUSTER_LABEL: cluster},
        )
        return await runtime.create_container(spec)

    # GIVEN containers of this cluster with no record and with a record on another host, and one with no
    # record of another cluster (another installation on the same Docker Engine)
    no_record = await labelled(str(uuid.uuid4()), settings.cluster_id)
    on_other_host = await labelled(moved, settings.cluster_id)
    foreign = await labelled(str(uuid.uuid4()), other_cluster)
    try:
        reconciler = Reconciler(world["context"], settings)
        # WHEN first seen THEN nothing is removed yet
        assert await reconciler.sweep_orphans() == []
        # WHEN seen again after the grace THEN this cluster's two orphans are removed
        await asyncio.sleep(settings.worker_orphan_grace_seconds + 0.2)  # part of the check: past the grace
        assert sorted(await reconciler.sweep_orphans()) == sorted([no_record, on_other_host])
        remaining = {container.id for container in docker_client.containers.list(ignore_removed=True, all=True)}
        assert no_record not in remaining and on_other_host not in remaining
        # AND the other cluster's container and the tracked one are left alone
        assert foreign in remaining
        assert (await _row(database, kept))["docker_id"] in remaining
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_container(foreign, force=True)
        async with database.transaction() as conn:
            await conn.execute("DELETE FROM containers WHERE id = %s", (moved,))
            await conn.execute("DELETE FROM hosts WHERE id = %s", (elsewhere,))


# ------------------------------------------------------------------------------------------ health


def _check(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "port": 8080,
        "interval_seconds": 1,
        "timeout_seconds": 1,
        "retries": 2,
        "start_period_seconds": 0,
        **fields,
    }


@pytest.mark.parametrize(
    ("check", "status", "reason"),
    [
        (_check("http", path="/nope"), "unhealthy", "GET /nope on port 8080 answered 404"),
        (_check("http", path="/index.html"), "running", None),
        (_check("tcp"), "running", None),
        (_check("tcp", port=9), "unhealthy", "TCP connect to port 9 failed"),
    ],
)
async def test_the_job_waits_for_the_first_health_check(
    database: Database, world: dict[str, Any], check: dict[str, Any], status: str, reason: str | None
) -> None:
    _, row = await _deployed(database, world, health_check=check)
    assert row["status"] == status, row
    if reason is None:
        assert row["reason"] is None
    else:
        assert reason in row["reason"] and "did not pass within 2 s" in row["reason"], row["reason"]


async def test_the_reconciler_keeps_checking_health(
    database: Database, world: dict[str, Any], docker_client: Any
) -> None:
    # GIVEN a healthy container checked on /index.html
    container_id, row = await _deployed(database, world, health_check=_check("http", path="/index.html"))
    assert row["status"] == "running"
    stopping = asyncio.Event()
    loop = asyncio.create_task(run_periodic(reconciler_task(world["context"], world["settings"]), stopping))
    try:
        # WHEN the page disappears THEN after `retries` failed checks it is unhealthy, saying why
        await asyncio.to_thread(
            docker_client.api.exec_start,
            docker_client.api.exec_create(row["docker_id"], ["mv", "/srv/www/index.html", "/srv/away.html"]),
        )
        unhealthy = await _until(lambda: _row(database, container_id), lambda r: r["status"] == "unhealthy")
        assert unhealthy["reason"] == "health check failed 2 times in a row: GET /index.html on port 8080 answered 404"

        # WHEN it comes back THEN one passing check makes it running again
        await asyncio.to_thread(
            docker_client.api.exec_start,
            docker_client.api.exec_create(row["docker_id"], ["mv", "/srv/away.html", "/srv/www/index.html"]),
        )
        healthy = await _until(lambda: _row(database, container_id), lambda r: r["status"] == "running")
        assert healthy["reason"] is None
    finally:
        stopping.set()
        await asyncio.wait_for(loop, 15)
    # AND stopping the reconciler left the container running
    assert _inspect(docker_client, row["docker_id"])["State"]["Status"] == "running"


async def test_a_host_port_taken_outside_berth_is_swapped_for_a_free_one(
    database: Database, world: dict[str, Any]
) -> None:
    # GIVEN a container whose allocated host port something else on the host already listens on
    hosts: HostStore = world["context"].hosts
    container_id = await _record(database, world)
    owner = uuid.UUID(container_id)
    taken = await allocate_port(hosts, world["host_id"], "container", owner, world["settings"].host_port_range)
    async with database.transaction() as conn:
        await conn.execute(
            "UPDATE containers SET ports = %s WHERE id = %s",
            (
                json.dumps([{"container_port": 8080, "protocol": "tcp", "host_ip": "127.0.0.1", "host_port": taken}]),
                container_id,
            ),
        )
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", taken))
    squatter.listen()
    try:
        # WHEN the container job runs
        await reconcile_container(world["context"], {"container_id": container_id})
    finally:
        squatter.close()

    # THEN it runs on another port of the range, which the record and the allocations now hold instead
    row = await _row(database, container_id)
    [port] = row["ports"]
    assert row["status"] == "running", row["reason"]
    assert port["host_port"] != taken and port["host_port"] in world["settings"].host_port_range
    assert await hosts.ports_of("container", owner) == [(world["host_id"], port["host_port"])]
    answer = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port['host_port']}/cgi-bin/whoami", timeout=5)
    assert answer.status_code == 200
