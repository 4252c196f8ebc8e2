"""Hosts and host-port allocation against the real PostgreSQL: registration, heartbeats, liveness, and a
port allocator that never gives one port twice on a host, even when many allocations race."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from shared.db import Database, get_database
from shared.errors import NotFound
from shared.host_ports import PortsExhausted, allocate_port, release_ports
from shared.host_store import HostStore
from tests.support.waiting import wait_until_async
from worker.hosts import heartbeat, live_hosts, mark_stale_hosts_down, register_host
from worker.settings import WorkerSettings


@pytest.fixture
async def database() -> Database:
    return get_database(os.environ["BERTH_DATABASE_URL"])


@pytest.fixture
def store(database: Database) -> HostStore:
    return HostStore(database)


@pytest.fixture
async def host_ids(database: Database) -> AsyncIterator[Callable[[], str]]:
    """Unique host ids for the test; the hosts (and, by cascade, their ports) are removed afterwards."""
    created: list[str] = []

    def new_id() -> str:
        created.append(f"test-host-{secrets.token_hex(6)}")
        return created[-1]

    yield new_id
    async with database.transaction() as conn:
        await conn.execute("DELETE FROM hosts WHERE id = ANY(%s)", (created,))


async def _set_silence(database: Database, host_id: str, seconds: int) -> None:
    async with database.transaction() as conn:
        await conn.execute(
            "UPDATE hosts SET heartbeat_at = now() - make_interval(secs => %s) WHERE id = %s", (seconds, host_id)
        )


async def test_registration_is_an_upsert(store: HostStore, host_ids: Callable[[], str]) -> None:
    # GIVEN a registered host
    host_id = host_ids()
    first = await register_host(store, host_id, "127.0.0.1", 2, 2048)
    assert (first.status, first.address, first.cpu_capacity, first.memory_capacity_mb) == ("up", "127.0.0.1", 2, 2048)
    assert first.labels == {}

    # WHEN it registers again with a new address and capacity
    second = await register_host(store, host_id, "10.0.0.7", 4.5, 8192)

    # THEN the same host is updated, its first registration time kept
    assert (second.address, second.cpu_capacity, second.memory_capacity_mb) == ("10.0.0.7", 4.5, 8192)
    assert second.registered_at == first.registered_at
    assert second.heartbeat_at >= first.heartbeat_at
    assert [h for h in await live_hosts(store) if h.id == host_id] == [second]


async def test_registration_brings_a_down_host_up_but_keeps_a_drain(
    store: HostStore, database: Database, host_ids: Callable[[], str]
) -> None:
    down, draining = host_ids(), host_ids()
    for host_id in (down, draining):
        await register_host(store, host_id, "127.0.0.1", 1, 512)
    async with database.transaction() as conn:
        await conn.execute("UPDATE hosts SET status = 'down' WHERE id = %s", (down,))
        await conn.execute("UPDATE hosts SET status = 'draining' WHERE id = %s", (draining,))

    assert (await register_host(store, down, "127.0.0.1", 1, 512)).status == "up"
    assert (await register_host(store, draining, "127.0.0.1", 1, 512)).status == "draining"
    live = {h.id for h in await live_hosts(store)}
    assert down in live
    assert draining not in live


async def test_heartbeat_refreshes_a_host_and_reports_unknown_ones(
    store: HostStore, database: Database, host_ids: Callable[[], str]
) -> None:
    # GIVEN a host that has been silent for a minute
    host_id = host_ids()
    await register_host(store, host_id, "127.0.0.1", 1, 512)
    await _set_silence(database, host_id, 60)
    before = await store.get(host_id)
    assert before is not None

    # WHEN it heartbeats
    assert await heartbeat(store, host_id) is True

    # THEN its heartbeat time moved forward; a host never registered gets False
    after = await store.get(host_id)
    assert after is not None
    assert after["heartbeat_at"] > before["heartbeat_at"]
    assert await heartbeat(store, host_ids()) is False


async def test_silent_hosts_are_marked_down_and_fresh_ones_are_not(
    store: HostStore, database: Database, host_ids: Callable[[], str]
) -> None:
    # GIVEN a host silent for longer than the limit and one that just heartbeated
    silent, fresh = host_ids(), host_ids()
    for host_id in (silent, fresh):
        await register_host(store, host_id, "127.0.0.1", 1, 512)
    await _set_silence(database, silent, 120)

    # WHEN stale hosts are marked down
    marked = await mark_stale_hosts_down(store, 30)

    # THEN only the silent one is down, and only the first sweep reports it
    assert silent in marked
    assert fresh not in marked
    live = {h.id for h in await live_hosts(store)}
    assert silent not in live
    assert fresh in live
    assert silent not in await mark_stale_hosts_down(store, 30)

    # AND a heartbeat brings it back up
    assert await heartbeat(store, silent) is True
    assert silent in {h.id for h in await live_hosts(store)}


async def test_concurrent_allocations_get_distinct_ports_in_range(
    store: HostStore, host_ids: Callable[[], str]
) -> None:
    # GIVEN a host with the default port range
    host_id = host_ids()
    await register_host(store, host_id, "127.0.0.1", 1, 512)
    port_range = WorkerSettings().host_port_range

    # WHEN 50 allocations race
    owners = [uuid.uuid4() for _ in range(50)]
    ports = await asyncio.gather(*(allocate_port(store, host_id, "container", o, port_range) for o in owners))

    # THEN each got its own port, all inside the range, each recorded for its owner
    assert len(set(ports)) == 50
    assert all(port in port_range for port in ports)
    for owner, port in zip(owners, ports, strict=True):
        assert await store.ports_of("container", owner) == [(host_id, port)]


async def test_a_full_range_races_to_exactly_its_size(store: HostStore, host_ids: Callable[[], str]) -> None:
    # GIVEN a range of 5 ports and 8 racing allocations
    host_id = host_ids()
    await register_host(store, host_id, "127.0.0.1", 1, 512)
    results = await asyncio.gather(
        *(allocate_port(store, host_id, "container", uuid.uuid4(), range(31000, 31005)) for _ in range(8)),
        return_exceptions=True,
    )

    # THEN exactly 5 got the 5 ports and 3 were told the range is full
    ports = sorted(r for r in results if isinstance(r, int))
    assert ports == [31000, 31001, 31002, 31003, 31004]
    assert sum(isinstance(r, PortsExhausted) for r in results) == 3


async def test_a_full_range_raises_a_clear_error(store: HostStore, host_ids: Callable[[], str]) -> None:
    # GIVEN a range of 3 ports, all allocated
    host_id = host_ids()
    await register_host(store, host_id, "127.0.0.1", 1, 512)
    small = range(30100, 30103)
    for _ in small:
        await allocate_port(store, host_id, "container", uuid.uuid4(), small)

    # WHEN one more is asked for, THEN the domain error says which host and range are full
    with pytest.raises(PortsExhausted) as raised:
        await allocate_port(store, host_id, "container", uuid.uuid4(), small)
    assert raised.value.status == 503
    assert raised.value.code == "ports_exhausted"
    assert host_id in raised.value.message
    assert "30100-30102" in raised.value.message


async def test_released_ports_can_be_allocated_again(store: HostStore, host_ids: Callable[[], str]) -> None:
    # GIVEN an owner holding both ports of a 2-port range
    host_id = host_ids()
    await register_host(store, host_id, "127.0.0.1", 1, 512)
    small = range(30200, 30202)
    owner = uuid.uuid4()
    held = {await allocate_port(store, host_id, "container", owner, small) for _ in small}
    assert held == {30200, 30201}
    with pytest.raises(PortsExhausted):
        await allocate_port(store, host_id, "container", uuid.uuid4(), small)

    # WHEN the owner releases them
    assert await release_ports(store, "container", owner) == [(host_id, 30200), (host_id, 30201)]

    # THEN another owner can have them; releasing what nobody holds is harmless
    newcomer = uuid.uuid4()
    assert await allocate_port(store, host_id, "container", newcomer, small) in held
    assert await release_ports(store, "container", owner) == []
    assert len(await store.ports_of("container", newcomer)) == 1


async def test_the_same_port_on_two_hosts_is_fine(store: HostStore, host_ids: Callable[[], str]) -> None:
    first, second = host_ids(), host_ids()
    for host_id in (first, second):
        await register_host(store, host_id, "127.0.0.1", 1, 512)
    one_port = range(30300, 30301)
    owner = uuid.uuid4()

    assert await allocate_port(store, first, "container", owner, one_port) == 30300
    assert await allocate_port(store, second, "container", owner, one_port) == 30300
    assert await store.ports_of("container", owner) == sorted([(first, 30300), (second, 30300)])


async def test_allocating_on_an_unknown_host_is_not_found(store: HostStore, host_ids: Callable[[], str]) -> None:
    with pytest.raises(NotFound):
        await allocate_port(store, host_ids(), "container", uuid.uuid4(), range(30400, 30410))


@pytest.mark.parametrize("bad_range", [range(0), range(30010, 30000), range(65535, 65537), range(0, 2)])
async def test_invalid_port_ranges_are_refused(store: HostStore, host_ids: Callable[[], str], bad_range: range) -> None:
    host_id = host_ids()
    await register_host(store, host_id, "127.0.0.1", 1, 512)
    with pytest.raises(ValueError):
        await allocate_port(store, host_id, "container", uuid.uuid4(), bad_range)


@pytest.mark.docker
async def test_the_worker_registers_its_host_and_marks_silent_ones_down(
    store: HostStore, database: Database, host_ids: Callable[[], str]
) -> None:
    # GIVEN a host that fell silent and a worker on a host of its own with a fast heartbeat
    from worker.main import build_worker
    from worker.periodic import run_periodic

    silent, own = host_ids(), host_ids()
    await register_host(store, silent, "127.0.0.1", 1, 512)
    await _set_silence(database, silent, 120)
    worker = build_worker(
        WorkerSettings(host_id=own, host_heartbeat_seconds=0.2, host_down_after_seconds=30, host_cpu_capacity=3)
    )

    # WHEN its heartbeat loop runs
    task = asyncio.create_task(run_periodic(worker.host_heartbeat_task(), worker.stopping))
    try:
        # THEN its host is registered and keeps heartbeating, and the silent host is down
        first_beat = await wait_until_async(lambda: store.get(own), message="the worker did not register its host")
        assert first_beat["status"] == "up"
        assert float(first_beat["cpu_capacity"]) == 3

        async def beat_again() -> bool:
            latest = await store.get(own)
            return latest is not None and latest["heartbeat_at"] > first_beat["heartbeat_at"]

        async def silent_host_down() -> bool:
            gone = await store.get(silent)
            return gone is not None and gone["status"] == "down"

        await wait_until_async(beat_again, message="the host did not heartbeat again")
        await wait_until_async(silent_host_down, message="the silent host was not marked down")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)


async def test_least_busy_host_leaves_out_excluded_silent_and_down_hosts(
    store: HostStore, database: Database, host_ids: Callable[[], str]
) -> None:
    # GIVEN a live host, a host that fell silent and a host marked down
    live, silent, down = host_ids(), host_ids(), host_ids()
    for host_id in (live, silent, down):
        await register_host(store, host_id, "127.0.0.1", 1, 512)
    await _set_silence(database, silent, 120)
    async with database.transaction() as conn:
        await conn.execute("UPDATE hosts SET status = 'down' WHERE id = %s", (down,))
    others = [host.id for host in await live_hosts(store) if host.id not in (live, silent, down)]

    # WHEN placement may use any host but other tests' ones, THEN only the live host qualifies
    chosen = await store.least_busy_host(30, exclude=others)
    assert chosen is not None and chosen["id"] == live

    # AND excluding it too leaves nothing: silent and down hosts are never chosen
    assert await store.least_busy_host(30, exclude=[*others, live]) is None
