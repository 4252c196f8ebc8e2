"""Container log shipping against the real Docker Engine and PostgreSQL: the worker copies its host's
containers' log lines into container_logs with Docker's timestamps and streams, in order, never twice (also
across a restart), including what a container writes as it stops, and deletes lines past retention."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import pytest
from docker.types import LogConfig

from shared.db import Database, get_database
from tests.support.docker_images import built_test_image
from tests.support.waiting import wait_until_async
from worker.container_runtime import CONTAINER_ID_LABEL, DockerRuntime
from worker.log_shipper import MAX_LINE_BYTES, LogShipper, log_shipper_task, ship_container
from worker.log_store import LogStore
from worker.periodic import run_periodic
from worker.settings import WorkerSettings

pytestmark = pytest.mark.docker

# out1, err1 and out2 a second apart: Docker stamps each stream's lines on its own, so lines written in the
# same instant to stdout and stderr may be stamped in either order.
PRINTS = "echo out1; sleep 1; echo err1 >&2; sleep 1; echo out2; sleep 300"


@pytest.fixture(scope="module")
def web_image(docker_client: Any) -> Iterator[str]:
    tag = f"berth-test/web:{secrets.token_hex(4)}"
    with built_test_image(docker_client, "web", tag):
        yield tag


@pytest.fixture(scope="module")
def runtime() -> DockerRuntime:
    return DockerRuntime(timeout=60)


@pytest.fixture
async def database() -> Database:
    return get_database(os.environ["BERTH_DATABASE_URL"])


@pytest.fixture
async def world(database: Database) -> AsyncIterator[dict[str, Any]]:
    """Two hosts, a user and an image; removed afterwards (their containers and lines by cascade)."""
    hosts = [f"test-host-{secrets.token_hex(6)}", f"test-other-{secrets.token_hex(6)}"]
    user_id, image_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with database.transaction() as conn:
        for host_id in hosts:
            await conn.execute(
                "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 4, 4096)",
                (host_id,),
            )
        await conn.execute(
            "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')",
            (user_id, f"logs-{user_id}@example.com"),
        )
        await conn.execute(
            "INSERT INTO images (id, owner_id, name, tag, object_key) VALUES (%s, %s, 'web', 'v1', 'k')",
            (image_id, user_id),
        )
    yield {"host_id": hosts[0], "other_host_id": hosts[1], "user_id": user_id, "image_id": image_id}
    async with database.transaction() as conn:
        await conn.execute("DELETE FROM containers WHERE host_id = ANY(%s)", (hosts,))
        await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
        await conn.execute("DELETE FROM hosts WHERE id = ANY(%s)", (hosts,))


@pytest.fixture
def docker_containers(docker_client: Any) -> Iterator[list[str]]:
    """Docker ids appended here are force-removed after the test, whatever happened."""
    created: list[str] = []
    yield created
    for docker_id in created:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_container(docker_id, force=True, v=True)


@pytest.fixture
def launch(
    docker_client: Any, web_image: str, database: Database, world: dict[str, Any], docker_containers: list[str]
) -> Callable[..., Awaitable[tuple[str, str]]]:
    """Run a labelled container of the web image with ``script`` and record it; returns (record id, Docker id)."""

    async def start(script: str, *, host_id: str | None = None, status: str = "running") -> tuple[str, str]:
        container_id = str(uuid.uuid4())
        container = await asyncio.to_thread(
            docker_client.containers.run,
            web_image,
            ["sh", "-c", script],
            detach=True,
            labels={CONTAINER_ID_LABEL: container_id},
            log_config=LogConfig(type=LogConfig.types.JSON),
            network_mode="none",
        )
        docker_containers.append(container.id)
        async with database.transaction() as conn:
            await conn.execute(
                "INSERT INTO containers (id, owner_id, image_id, name, cpu, memory_mb, host_id, docker_id, status) "
                "VALUES (%s, %s, %s, %s, 0.5, 64, %s, %s, %s)",
                (
                    container_id,
                    world["user_id"],
                    world["image_id"],
                    f"c-{secrets.token_hex(4)}",
                    host_id or world["host_id"],
                    container.id,
                    status,
                ),
            )
        return container_id, container.id

    return start


def _settings(world: dict[str, Any], **overrides: Any) -> WorkerSettings:
    return WorkerSettings(host_id=world["host_id"], **overrides)


async def _stored(database: Database, container_id: str) -> list[dict[str, Any]]:
    async with database.transaction() as conn:
        cursor = await conn.execute(
            "SELECT ts, stream, text FROM container_logs WHERE container_id = %s ORDER BY ts, id", (container_id,)
        )
        return await cursor.fetchall()


async def _texts(database: Database, container_id: str) -> list[tuple[str, str]]:
    return [(row["stream"], row["text"]) for row in await _stored(database, container_id)]


async def _rounds_until(
    shipper: LogShipper, database: Database, container_id: str, count: int, timeout: float = 30.0
) -> list[int]:
    """Run rounds until ``count`` lines of the container are stored; returns each round's total."""
    shipped: list[int] = []

    async def stored_enough() -> bool:
        if len(await _stored(database, container_id)) >= count:
            return True
        shipped.append(await shipper.ship_round())
        return False

    await wait_until_async(stored_enough, timeout=timeout, interval=0.2, message=f"not {count} lines stored")
    return shipped


def _docker_times(docker_client: Any, docker_id: str) -> list[datetime]:
    """The microseconds of each line's Docker timestamp (`docker logs --timestamps`), oldest first."""
    output = docker_client.api.logs(docker_id, timestamps=True).decode()
    stamps = [line.split(" ", 1)[0] for line in output.splitlines()]
    # 2026-01-02T03:04:05.123456789Z -> microseconds (PostgreSQL's precision; the rest is cut, not rounded)
    return sorted(datetime.fromisoformat(stamp[:26] + "+00:00").astimezone(UTC) for stamp in stamps)


async def test_lines_arrive_in_order_with_their_streams_once(
    database: Database,
    world: dict[str, Any],
    runtime: DockerRuntime,
    docker_client: Any,
    launch: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    # GIVEN a running container of this host that writes to stdout and stderr, the same on another host,
    # and one whose record is deleted
    container_id, docker_id = await launch(PRINTS)
    other_id, _ = await launch(PRINTS, host_id=world["other_host_id"])
    deleted_id, _ = await launch(PRINTS, status="deleted")
    shipper = LogShipper(LogStore(database), runtime, _settings(world))

    # WHEN the shipper runs rounds until the three lines are stored
    await _rounds_until(shipper, database, container_id, 3)

    # THEN they are in order, each with its stream and Docker's timestamp
    assert await _texts(database, container_id) == [("stdout", "out1"), ("stderr", "err1"), ("stdout", "out2")]
    stored = await _stored(database, container_id)
    assert [row["ts"] for row in stored] == await asyncio.to_thread(_docker_times, docker_client, docker_id)

    # AND a second round ships nothing twice
    assert await shipper.ship_round() == 0
    assert len(await _stored(database, container_id)) == 3

    # AND the other host's container and the deleted one were not shipped
    assert await _stored(database, other_id) == []
    assert await _stored(database, deleted_id) == []


async def test_a_restarted_shipper_continues_and_ships_the_lines_written_at_stop(
    database: Database,
    world: dict[str, Any],
    runtime: DockerRuntime,
    docker_client: Any,
    launch: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    # GIVEN a container that says hello, and goodbye on stderr when it is stopped; hello is shipped
    script = "trap 'echo bye >&2; exit 0' TERM; echo hello; while true; do sleep 1; done"
    container_id, docker_id = await launch(script)
    await _rounds_until(LogShipper(LogStore(database), runtime, _settings(world)), database, container_id, 1)

    # WHEN the worker restarts (a fresh shipper) and ships again
    restarted = LogShipper(LogStore(database), runtime, _settings(world))
    # THEN nothing is shipped twice
    assert await restarted.ship_round() == 0
    assert await _texts(database, container_id) == [("stdout", "hello")]

    # WHEN the container is stopped and writes its last line
    await asyncio.to_thread(docker_client.api.stop, docker_id, timeout=10)
    # THEN the next round ships that line (without waiting for it to settle: the container has stopped)
    assert await restarted.ship_round() == 1
    assert await _texts(database, container_id) == [("stdout", "hello"), ("stderr", "bye")]
    # AND the stopped container is left alone once drained, and nothing is shipped twice
    assert await restarted.ship_round() == 0
    assert await LogShipper(LogStore(database), runtime, _settings(world)).ship_round() == 0
    assert len(await _stored(database, container_id)) == 2


async def test_a_round_is_capped_and_the_rest_follows_in_order(
    database: Database,
    world: dict[str, Any],
    runtime: DockerRuntime,
    docker_client: Any,
    launch: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    # GIVEN a container that wrote 12 lines (each its own write, 20 ms apart) and exited
    container_id, docker_id = await launch("for i in $(seq 1 12); do echo line$i; usleep 20000; done")
    await asyncio.to_thread(docker_client.api.wait, docker_id, timeout=30)
    shipper = LogShipper(LogStore(database), runtime, _settings(world), max_lines=5)

    # WHEN rounds ship at most 5 lines each
    shipped = await _rounds_until(shipper, database, container_id, 12)

    # THEN three rounds shipped 5, 5 and 2 lines, in order, none twice
    assert shipped == [5, 5, 2]
    assert await _texts(database, container_id) == [("stdout", f"line{i}") for i in range(1, 13)]
    assert await shipper.ship_round() == 0


async def test_a_running_containers_lines_wait_to_settle(
    database: Database,
    world: dict[str, Any],
    runtime: DockerRuntime,
    docker_client: Any,
    launch: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    # GIVEN a running container whose line Docker already has
    container_id, docker_id = await launch("echo early; sleep 300")

    async def docker_has_the_line() -> bool:
        return b"early" in await asyncio.to_thread(docker_client.api.logs, docker_id)

    await wait_until_async(docker_has_the_line, interval=0.1, message="Docker never had the line")

    # WHEN a shipper that lets lines settle for an hour runs: THEN the line is not shipped yet
    assert await LogShipper(LogStore(database), runtime, _settings(world), settle_seconds=3600).ship_round() == 0
    # AND once it is older than the settle time, it is
    assert await LogShipper(LogStore(database), runtime, _settings(world), settle_seconds=0).ship_round() == 1
    assert await _texts(database, container_id) == [("stdout", "early")]


async def test_ship_container_keeps_the_final_lines_long_lines_cut(
    database: Database,
    world: dict[str, Any],
    runtime: DockerRuntime,
    docker_client: Any,
    launch: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    # GIVEN a container that wrote a long line, a line with a NUL byte and a line without newline (a second
    # apart: the streams are stamped apart), and exited
    script = (
        "echo first; head -c 40000 /dev/zero | tr '\\0' x; echo; sleep 1; printf 'a\\000b\\n' >&2; sleep 1; printf last"
    )
    container_id, docker_id = await launch(script)
    await asyncio.to_thread(docker_client.api.wait, docker_id, timeout=30)
    store = LogStore(database)

    # WHEN the container job ships it right before removing it (no round ran)
    assert await ship_container(store, runtime, container_id, docker_id) == 4

    # THEN every line is kept: the long one cut at 16 KiB, the NUL replaced (PostgreSQL text refuses it)
    assert await _texts(database, container_id) == [
        ("stdout", "first"),
        ("stdout", "x" * MAX_LINE_BYTES),
        ("stderr", "a\ufffdb"),
        ("stdout", "last"),
    ]
    # AND shipping again adds nothing; a container gone from Docker ships nothing and raises nothing
    assert await ship_container(store, runtime, container_id, docker_id) == 0
    await asyncio.to_thread(docker_client.api.remove_container, docker_id, force=True)
    assert await ship_container(store, runtime, container_id, docker_id) == 0
    assert len(await _stored(database, container_id)) == 4


async def test_lines_past_retention_are_deleted_at_most_every_minute(
    database: Database, world: dict[str, Any], runtime: DockerRuntime
) -> None:
    # GIVEN a container record (gone from Docker) with lines 1 hour and 80 hours old
    container_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO containers (id, owner_id, image_id, name, cpu, memory_mb, host_id, docker_id, status) "
            "VALUES (%s, %s, %s, %s, 0.5, 64, %s, 'gone-from-docker', 'running')",
            (container_id, world["user_id"], world["image_id"], f"c-{secrets.token_hex(4)}", world["host_id"]),
        )
        for hours, text in ((80, "old"), (1, "recent")):
            await conn.execute(
                "INSERT INTO container_logs (container_id, ts, stream, text) VALUES (%s, %s, 'stdout', %s)",
                (container_id, now - timedelta(hours=hours), text),
            )
    shipper = LogShipper(LogStore(database), runtime, _settings(world, log_retention_hours=72))

    # WHEN a round runs: THEN the line past 72 hours is gone, the recent one stays
    assert await shipper.ship_round() == 0
    assert await _texts(database, container_id) == [("stdout", "recent")]

    # AND within the minute another round does not prune again; a fresh shipper (restart) does
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO container_logs (container_id, ts, stream, text) VALUES (%s, %s, 'stdout', 'old again')",
            (container_id, now - timedelta(hours=90)),
        )
    await shipper.ship_round()
    assert len(await _stored(database, container_id)) == 2
    await LogShipper(LogStore(database), runtime, _settings(world, log_retention_hours=72)).ship_round()
    assert await _texts(database, container_id) == [("stdout", "recent")]


async def test_the_loop_ships_past_a_vanished_container_and_stops(
    database: Database,
    world: dict[str, Any],
    runtime: DockerRuntime,
    launch: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    # GIVEN a record whose Docker container vanished, and a running container that writes a line
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO containers (id, owner_id, image_id, name, cpu, memory_mb, host_id, docker_id, status) "
            "VALUES (%s, %s, %s, %s, 0.5, 64, %s, %s, 'running')",
            (str(uuid.uuid4()), world["user_id"], world["image_id"], "vanished", world["host_id"], "f" * 64),
        )
    container_id, _ = await launch("echo alive; sleep 300")
    stopping = asyncio.Event()
    task = asyncio.create_task(
        run_periodic(
            log_shipper_task(LogStore(database), runtime, _settings(world, worker_log_ship_interval_seconds=0.1)),
            stopping,
        )
    )
    try:
        # WHEN the loop runs: THEN the live container's line arrives despite the vanished one
        await wait_until_async(
            lambda: _texts(database, container_id), timeout=30, interval=0.1, message="the live line never arrived"
        )
        assert await _texts(database, container_id) == [("stdout", "alive")]
    finally:
        # AND the loop stops when asked
        stopping.set()
        await asyncio.wait_for(task, 10)


async def test_a_long_backlog_is_read_from_the_cursor_in_capped_rounds(
    database: Database,
    world: dict[str, Any],
    runtime: DockerRuntime,
    docker_client: Any,
    launch: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    # GIVEN an exited container with more lines than the shipper's tail probe looks at
    container_id, docker_id = await launch("i=1; while [ $i -le 450 ]; do echo n$i; i=$((i+1)); done")
    await asyncio.to_thread(docker_client.api.wait, docker_id, timeout=30)
    shipper = LogShipper(LogStore(database), runtime, _settings(world), max_lines=300)

    # WHEN rounds ship at most 300 lines each (a round finishes the microsecond its last line is in)
    shipped = await _rounds_until(shipper, database, container_id, 450)

    # THEN the first round stopped at the cap, the second brought the rest, all in order, none twice
    assert len(shipped) == 2 and 300 <= shipped[0] < 450 and sum(shipped) == 450
    assert await _texts(database, container_id) == [("stdout", f"n{i}") for i in range(1, 451)]


async def test_concurrent_shipments_of_one_container_store_each_line_once(
    database: Database,
    world: dict[str, Any],
    runtime: DockerRuntime,
    docker_client: Any,
    launch: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    # GIVEN an exited container with lines on both streams, nothing shipped yet
    container_id, docker_id = await launch("for i in 1 2 3; do echo out$i; echo err$i >&2; done")
    await asyncio.to_thread(docker_client.api.wait, docker_id, timeout=30)
    store = LogStore(database)

    # WHEN a round and two final shipments (the container job) run at the same time
    counts = await asyncio.gather(
        LogShipper(store, runtime, _settings(world)).ship_round(),
        ship_container(store, runtime, container_id, docker_id),
        ship_container(store, runtime, container_id, docker_id),
    )

    # THEN each line was stored once, by whichever got there first
    assert sum(counts) == 6
    assert sorted(await _texts(database, container_id)) == sorted(
        [("stdout", f"out{i}") for i in (1, 2, 3)] + [("stderr", f"err{i}") for i in (1, 2, 3)]
    )
