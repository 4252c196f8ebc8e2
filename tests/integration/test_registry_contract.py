"""The service registry contract: one suite, run against every adapter.

PostgreSQL runs always (the run's own database). Consul runs when CONSUL_HTTP_ADDR (default
http://127.0.0.1:8500) names an agent that answers /v1/status/leader with a leader; otherwise those cases are
skipped and say why. Names carry a random suffix and every test deregisters what it registered, so a shared
Consul agent and the other tests in the run are left as they were.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from shared.errors import NotFound
from shared.registry import (
    CheckType,
    HealthCheck,
    HealthStatus,
    Instance,
    Namespace,
    RegistryBackend,
    RegistrySettings,
    ServiceRegistry,
    get_registry,
)
from tests.support.waiting import wait_until_async

INTERNAL = Namespace.INTERNAL_SERVICES
CLIENT = Namespace.CLIENT_CONTAINERS
CONSUL_HTTP_ADDR = os.environ.get("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500")


def consul_agent_answers(address: str) -> bool:
    url = (address if "//" in address else "http://" + address).rstrip("/") + "/v1/status/leader"
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and bool(response.json())


class Registered:
    """The registry under test, which remembers what a test registered so it can be removed afterwards."""

    def __init__(self, registry: ServiceRegistry, backend: str) -> None:
        self.registry = registry
        self.backend = backend
        self.suffix = secrets.token_hex(3)
        self.created: set[tuple[Namespace, str]] = set()

    def name(self, base: str) -> str:
        """A service or instance name of this test's own."""
        return f"{base}-{self.suffix}"

    async def register(self, **fields: Any) -> Instance:
        fields.setdefault("address", "10.1.0.1")
        fields.setdefault("port", 8000)
        instance = Instance(**fields)
        self.created.add((instance.namespace, instance.id))
        return await self.registry.register(instance)

    async def ids(self, namespace: Namespace, service: str, **filters: Any) -> list[str]:
        return [instance.id for instance in await self.registry.instances(namespace, service, **filters)]

    async def cleanup(self) -> None:
        for namespace, instance_id in self.created:
            await self.registry.deregister(namespace, instance_id)


@pytest.fixture(params=[RegistryBackend.POSTGRES.value, RegistryBackend.CONSUL.value])
async def reg(request: pytest.FixtureRequest, test_database: str) -> AsyncIterator[Registered]:
    if request.param == RegistryBackend.CONSUL.value:
        if not consul_agent_answers(CONSUL_HTTP_ADDR):
            pytest.skip(
                f"no Consul agent reachable at {CONSUL_HTTP_ADDR}: "
                "set CONSUL_HTTP_ADDR to run the Consul contract tests"
            )
        settings = RegistrySettings(registry=RegistryBackend.CONSUL, consul_http_addr=CONSUL_HTTP_ADDR)
    else:
        settings = RegistrySettings(registry=RegistryBackend.POSTGRES, database_url=test_database)
    registry = get_registry(settings)
    registered = Registered(registry, request.param)
    try:
        yield registered
    finally:
        await registered.cleanup()
        await registry.close()


def http_check(**overrides: Any) -> HealthCheck:
    return HealthCheck(**{"type": CheckType.HTTP, "path": "/healthz", "interval_seconds": 10, **overrides})


def ttl_check(seconds: float) -> HealthCheck:
    return HealthCheck(type=CheckType.TTL, interval_seconds=seconds)


async def test_register_list_and_deregister(reg: Registered) -> None:
    # GIVEN two instances of one service, one with tags, meta and a check
    service = reg.name("api")
    first = await reg.register(
        id=reg.name("api-1"),
        namespace=INTERNAL,
        service=service,
        address="10.1.0.1",
        port=8001,
        tags=("v1", "blue"),
        meta={"version": "1.2.3"},
        check=http_check(),
        status=HealthStatus.PASSING,
    )
    await reg.register(id=reg.name("api-2"), namespace=INTERNAL, service=service, port=8002)
    assert first.updated_at is not None

    # WHEN they are listed
    listed = await reg.registry.instances(INTERNAL, service)

    # THEN both are there, as registered, ordered by id
    assert [instance.id for instance in listed] == [reg.name("api-1"), reg.name("api-2")]
    one = listed[0]
    assert (one.address, one.port, one.tags, one.meta) == ("10.1.0.1", 8001, ("v1", "blue"), {"version": "1.2.3"})
    assert one.check == http_check()
    assert one.status is HealthStatus.PASSING and one.owner_id is None and one.updated_at is not None
    assert listed[1].check is None and listed[1].status is HealthStatus.PASSING  # no check: passing
    summary = {item.name: item for item in await reg.registry.services(INTERNAL)}[service]
    assert (summary.instances, summary.passing) == (2, 2)

    # WHEN one is deregistered (twice), then the other
    assert await reg.registry.deregister(INTERNAL, reg.name("api-1")) is True
    assert await reg.registry.deregister(INTERNAL, reg.name("api-1")) is False
    assert await reg.ids(INTERNAL, service) == [reg.name("api-2")]
    assert await reg.registry.deregister(INTERNAL, reg.name("api-2")) is True

    # THEN the service is gone from the namespace
    assert await reg.ids(INTERNAL, service) == []
    assert service not in {item.name for item in await reg.registry.services(INTERNAL)}


async def test_register_again_replaces_the_instance(reg: Registered) -> None:
    # GIVEN an instance
    service = reg.name("web")
    instance_id = reg.name("web-1")
    await reg.register(id=instance_id, namespace=INTERNAL, service=service, address="10.1.0.1", port=8000, tags=("a",))

    # WHEN it is registered again with another address, port and tags
    await reg.register(id=instance_id, namespace=INTERNAL, service=service, address="10.1.0.2", port=9000, tags=("b",))

    # THEN there is still one instance, as last registered
    listed = await reg.registry.instances(INTERNAL, service)
    assert [(item.id, item.address, item.port, item.tags) for item in listed] == [
        (instance_id, "10.1.0.2", 9000, ("b",))
    ]


async def test_health_transitions_and_passing_only(reg: Registered) -> None:
    # GIVEN an instance with a check and no report yet (critical until the first probe passes), and a passing one
    service = reg.name("app")
    probed, steady = reg.name("app-1"), reg.name("app-2")
    registered = await reg.register(id=probed, namespace=INTERNAL, service=service, check=http_check())
    await reg.register(id=steady, namespace=INTERNAL, service=service, status=HealthStatus.PASSING, check=http_check())
    assert registered.status is HealthStatus.CRITICAL
    assert await reg.ids(INTERNAL, service, passing_only=True) == [steady]

    # WHEN the first passes its probe
    await reg.registry.report_health(INTERNAL, probed, HealthStatus.PASSING, "HTTP 200")
    # THEN both are passing
    assert await reg.ids(INTERNAL, service, passing_only=True) == [probed, steady]

    # WHEN the second turns to warning, then critical
    await reg.registry.report_health(INTERNAL, steady, HealthStatus.WARNING, "slow: 900 ms")
    by_id = {item.id: item for item in await reg.registry.instances(INTERNAL, service)}
    assert (by_id[steady].status, by_id[steady].output) == (HealthStatus.WARNING, "slow: 900 ms")
    assert by_id[probed].output == "HTTP 200"
    assert await reg.ids(INTERNAL, service, passing_only=True) == [probed]
    await reg.registry.report_health(INTERNAL, steady, HealthStatus.CRITICAL, "HTTP 503")

    # THEN only the first is passing, and the service counts say so
    assert await reg.ids(INTERNAL, service, passing_only=True) == [probed]
    summary = {item.name: item for item in await reg.registry.services(INTERNAL)}[service]
    assert (summary.instances, summary.passing) == (2, 1)

    # AND a report for an instance nobody registered is refused
    with pytest.raises(NotFound):
        await reg.registry.report_health(INTERNAL, reg.name("nobody"), HealthStatus.PASSING)


async def test_owners_see_only_their_own_instances(reg: Registered) -> None:
    # GIVEN two customers with a service of the same name
    service = reg.name("shop")
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await reg.register(id=reg.name("a-1"), namespace=CLIENT, service=service, owner_id=alice)
    await reg.register(id=reg.name("a-2"), namespace=CLIENT, service=service, owner_id=alice, check=http_check())
    await reg.register(id=reg.name("b-1"), namespace=CLIENT, service=service, owner_id=bob)

    # THEN each owner sees their own instances and counts, and an unfiltered (admin) read sees all
    assert await reg.ids(CLIENT, service, owner_id=alice) == [reg.name("a-1"), reg.name("a-2")]
    assert await reg.ids(CLIENT, service, owner_id=bob) == [reg.name("b-1")]
    assert await reg.ids(CLIENT, service) == [reg.name("a-1"), reg.name("a-2"), reg.name("b-1")]
    assert {(item.id, item.owner_id) for item in await reg.registry.instances(CLIENT, service, owner_id=bob)} == {
        (reg.name("b-1"), bob)
    }
    alice_services = {item.name: item for item in await reg.registry.services(CLIENT, owner_id=alice)}
    assert (alice_services[service].instances, alice_services[service].passing) == (2, 1)
    bob_services = {item.name: item for item in await reg.registry.services(CLIENT, owner_id=bob)}
    assert (bob_services[service].instances, bob_services[service].passing) == (1, 1)
    assert await reg.registry.services(CLIENT, owner_id=uuid.uuid4()) == []


async def test_namespaces_are_isolated(reg: Registered) -> None:
    # GIVEN the same service name and instance id in both namespaces
    service, instance_id, owner = reg.name("svc"), reg.name("svc-1"), uuid.uuid4()
    await reg.register(id=instance_id, namespace=INTERNAL, service=service, address="10.1.0.1")
    await reg.register(id=instance_id, namespace=CLIENT, service=service, address="10.2.0.1", owner_id=owner)

    # THEN each namespace has its own
    [internal] = await reg.registry.instances(INTERNAL, service)
    [client] = await reg.registry.instances(CLIENT, service)
    assert (internal.namespace, internal.address, internal.owner_id) == (INTERNAL, "10.1.0.1", None)
    assert (client.namespace, client.address, client.owner_id) == (CLIENT, "10.2.0.1", owner)

    # WHEN health is reported and the instance deregistered in one namespace
    await reg.registry.report_health(CLIENT, instance_id, HealthStatus.CRITICAL, "down")
    assert [item.status for item in await reg.registry.instances(INTERNAL, service)] == [HealthStatus.PASSING]
    assert await reg.registry.deregister(CLIENT, instance_id) is True

    # THEN the other namespace's instance is untouched
    assert await reg.ids(INTERNAL, service) == [instance_id]
    assert await reg.ids(CLIENT, service) == []


async def test_watch_wakes_on_a_change(reg: Registered) -> None:
    # GIVEN a service and its current index (index 0 answers at once)
    service = reg.name("watched")
    await reg.register(id=reg.name("w-1"), namespace=INTERNAL, service=service, check=http_check())
    start = await reg.registry.watch(INTERNAL, service, index=0, wait_seconds=30)
    assert start.changed is True and start.index > 0

    # WHEN a watch of the service and one of the namespace are waiting and the instance's health changes
    service_watch = asyncio.create_task(reg.registry.watch(INTERNAL, service, index=start.index, wait_seconds=60))
    namespace_start = await reg.registry.watch(INTERNAL, index=0)
    namespace_watch = asyncio.create_task(reg.registry.watch(INTERNAL, index=namespace_start.index, wait_seconds=60))
    # Part of the check: while nothing changes, both keep waiting (and by then both are waiting for the change)
    await asyncio.sleep(0.5)
    assert not service_watch.done() and not namespace_watch.done()
    await reg.registry.report_health(INTERNAL, reg.name("w-1"), HealthStatus.PASSING, "ok")

    # THEN both wake (long before their minute is up) with a later index
    woke = await asyncio.wait_for(service_watch, timeout=30)
    assert woke.changed is True and woke.index > start.index
    woke_namespace = await asyncio.wait_for(namespace_watch, timeout=30)
    assert woke_namespace.changed is True and woke_namespace.index > namespace_start.index

    # AND a new registration wakes a watch from the index just returned
    next_watch = asyncio.create_task(reg.registry.watch(INTERNAL, service, index=woke.index, wait_seconds=60))
    # No registry-neutral signal says a watch is waiting: give it the time to be, so that the change wakes it
    # rather than preceding it (a watch started after the change must answer the same, at once).
    await asyncio.sleep(0.3)
    await reg.register(id=reg.name("w-2"), namespace=INTERNAL, service=service)
    woke_again = await asyncio.wait_for(next_watch, timeout=30)
    assert woke_again.changed is True and woke_again.index > woke.index


async def test_watch_times_out_unchanged_when_nothing_happens(reg: Registered) -> None:
    # GIVEN a quiet service, and a change to another service in the same namespace while it is watched
    service, other = reg.name("quiet"), reg.name("noisy")
    await reg.register(id=reg.name("q-1"), namespace=INTERNAL, service=service)
    await reg.register(id=reg.name("n-1"), namespace=INTERNAL, service=other)
    current = await reg.registry.watch(INTERNAL, service)
    watch = asyncio.create_task(reg.registry.watch(INTERNAL, service, index=current.index, wait_seconds=2))
    await asyncio.sleep(0.3)  # as above: the other service's change should find the watch waiting
    await reg.register(id=reg.name("n-1"), namespace=INTERNAL, service=other, port=9100)

    # THEN the watch ends when its time is up, unchanged, at the same index
    result = await asyncio.wait_for(watch, timeout=30)
    assert (result.index, result.changed) == (current.index, False)


async def test_watch_from_an_old_index_returns_at_once(reg: Registered) -> None:
    # GIVEN an index read before a change
    service = reg.name("behind")
    await reg.register(id=reg.name("b-1"), namespace=CLIENT, service=service, owner_id=uuid.uuid4())
    before = await reg.registry.watch(CLIENT, service)
    namespace_before = await reg.registry.watch(CLIENT)
    await reg.registry.deregister(CLIENT, reg.name("b-1"))

    # WHEN a watch starts from it with a long wait
    # THEN it answers at once, changed (the wait_for bound is far below the watch's own five minutes)
    result = await asyncio.wait_for(reg.registry.watch(CLIENT, service, index=before.index, wait_seconds=300), 30)
    assert result.changed is True and result.index > before.index
    result = await asyncio.wait_for(reg.registry.watch(CLIENT, index=namespace_before.index, wait_seconds=300), 30)
    assert result.changed is True and result.index > namespace_before.index


async def test_current_index_answers_at_once_and_moves_with_every_change(reg: Registered) -> None:
    # GIVEN a service, and its index and its namespace's read now
    service = reg.name("indexed")
    await reg.register(id=reg.name("i-1"), namespace=CLIENT, service=service, owner_id=uuid.uuid4())
    # (the wait_for bounds are far below any watch's wait: the index is read, not waited for)
    before = await asyncio.wait_for(reg.registry.current_index(CLIENT, service), 10)
    namespace_before = await asyncio.wait_for(reg.registry.current_index(CLIENT), 10)

    # THEN the service's index is the one a watch from index 0 answers
    assert before > 0 and namespace_before > 0
    assert (await reg.registry.watch(CLIENT, service)).index == before

    # WHEN the service changes
    await reg.registry.deregister(CLIENT, reg.name("i-1"))

    # THEN both indexes moved past what they were
    assert await asyncio.wait_for(reg.registry.current_index(CLIENT, service), 10) > before
    assert await asyncio.wait_for(reg.registry.current_index(CLIENT), 10) > namespace_before


async def test_expiry_removes_instances_that_stopped_reporting(reg: Registered) -> None:
    # GIVEN two instances with one-second TTL checks: one keeps passing, the other goes silent
    service = reg.name("ttl")
    silent, alive = reg.name("ttl-silent"), reg.name("ttl-alive")
    for instance_id in (silent, alive):
        await reg.register(
            id=instance_id, namespace=INTERNAL, service=service, check=ttl_check(1), status=HealthStatus.PASSING
        )
    # Part of the check: 2.5 s of heartbeats, past the silent one's TTL and the expiry's 2 s below
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        await reg.registry.report_health(INTERNAL, alive, HealthStatus.PASSING, "alive")
        await asyncio.sleep(0.25)
    await reg.registry.report_health(INTERNAL, alive, HealthStatus.PASSING, "alive")

    # THEN the silent one's TTL has lapsed: it reads critical
    by_id = {item.id: item for item in await reg.registry.instances(INTERNAL, service)}
    assert by_id[silent].status is HealthStatus.CRITICAL
    assert by_id[alive].status is HealthStatus.PASSING

    # WHEN expiry runs
    removed = await reg.registry.expire(ttl_seconds=2)

    # THEN the silent one is gone and the live one stays
    assert (INTERNAL, silent) in {(item.namespace, item.id) for item in removed}
    assert alive not in {item.id for item in removed}
    assert await reg.ids(INTERNAL, service) == [alive]


async def test_concurrent_registrations_all_land(reg: Registered) -> None:
    # GIVEN an index before anything happens to the service
    service = reg.name("burst")
    before = await reg.registry.watch(INTERNAL, service)
    ids = [reg.name(f"burst-{number:02d}") for number in range(20)]

    # WHEN twenty instances register at once, and one more id is registered by ten callers at once
    await asyncio.gather(*(reg.register(id=instance_id, namespace=INTERNAL, service=service) for instance_id in ids))
    contested = reg.name("burst-contested")
    ports = list(range(9000, 9010))
    await asyncio.gather(
        *(reg.register(id=contested, namespace=INTERNAL, service=service, port=port) for port in ports)
    )

    # THEN every instance is there once, the contested one with one of the ports it was given
    listed = await reg.registry.instances(INTERNAL, service)
    assert sorted(item.id for item in listed) == sorted([*ids, contested])
    assert next(item.port for item in listed if item.id == contested) in ports
    after = await reg.registry.watch(INTERNAL, service, index=before.index, wait_seconds=0)
    assert after.changed is True and after.index > before.index


async def test_reports_and_registrations_in_parallel_keep_every_status(reg: Registered) -> None:
    # GIVEN ten instances with checks
    service = reg.name("par")
    ids = [reg.name(f"par-{number}") for number in range(10)]
    await asyncio.gather(
        *(reg.register(id=instance_id, namespace=INTERNAL, service=service, check=http_check()) for instance_id in ids)
    )

    # WHEN each is reported at once, half passing and half warning
    wanted = {
        instance_id: HealthStatus.PASSING if number % 2 else HealthStatus.WARNING
        for number, instance_id in enumerate(ids)
    }
    await asyncio.gather(
        *(reg.registry.report_health(INTERNAL, instance_id, status) for instance_id, status in wanted.items())
    )

    # THEN each reads as it was reported
    assert {item.id: item.status for item in await reg.registry.instances(INTERNAL, service)} == wanted


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"namespace": CLIENT}, "always names its owner"),
        ({"namespace": INTERNAL, "owner_id": uuid.uuid4()}, "has no owner"),
        ({"service": "Not A Label"}, "DNS label"),
        ({"id": "../etc"}, "instance id"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"tags": ("berth:namespace=internal-services",)}, "reserved"),
        ({"meta": {"berth_owner_id": "x"}}, "reserved"),
        ({"meta": {"bad key": "x"}}, "meta key"),
        ({"check": {"type": "http", "interval_seconds": 10}}, "needs a path"),
        ({"check": {"type": "tcp", "path": "/x"}}, "takes no path"),
        ({"check": {"type": "http", "path": "/x", "interval_seconds": 2, "timeout_seconds": 5}}, "must not exceed"),
    ],
)
def test_instances_that_no_registry_could_hold_are_refused(fields: dict[str, Any], message: str) -> None:
    # Both adapters rely on these rules (Consul's names, meta keys and the tenancy of namespaces).
    base: dict[str, Any] = {"id": "i-1", "namespace": INTERNAL, "service": "svc", "address": "10.0.0.1", "port": 80}
    with pytest.raises(ValidationError, match=message):
        Instance(**{**base, **fields})


# PostgreSQL's own guarantees, beyond the contract (Consul keeps these inside the agent).


@pytest.fixture
async def pg(test_database: str) -> AsyncIterator[Registered]:
    registry = get_registry(RegistrySettings(registry=RegistryBackend.POSTGRES, database_url=test_database))
    registered = Registered(registry, RegistryBackend.POSTGRES.value)
    try:
        yield registered
    finally:
        await registered.cleanup()
        await registry.close()


async def test_postgres_expiry_removes_instances_critical_past_their_deregister_after(pg: Registered) -> None:
    # GIVEN two instances reported critical, one allowed 1 s of that and one a minute, both reported recently
    service = pg.name("crit")
    quick, patient = pg.name("crit-quick"), pg.name("crit-patient")
    await pg.register(id=quick, namespace=INTERNAL, service=service, check=http_check(deregister_after_seconds=1))
    await pg.register(id=patient, namespace=INTERNAL, service=service, check=http_check(deregister_after_seconds=60))
    for instance_id in (quick, patient):
        await pg.registry.report_health(INTERNAL, instance_id, HealthStatus.CRITICAL, "HTTP 500")
    await asyncio.sleep(1.5)  # part of the check: past the quick one's deregister-after
    for instance_id in (quick, patient):
        await pg.registry.report_health(INTERNAL, instance_id, HealthStatus.CRITICAL, "HTTP 500")

    # WHEN expiry runs with a TTL longer than any of this
    removed = await pg.registry.expire(ttl_seconds=3600)

    # THEN only the one critical past its deregister-after is gone
    assert quick in {item.id for item in removed} and patient not in {item.id for item in removed}
    assert await pg.ids(INTERNAL, service) == [patient]


async def test_postgres_repeated_reports_do_not_move_the_index(pg: Registered) -> None:
    # GIVEN a passing instance and its service's index
    service, instance_id = pg.name("beat"), pg.name("beat-1")
    await pg.register(id=instance_id, namespace=INTERNAL, service=service, check=http_check(), status="passing")
    current = await pg.registry.watch(INTERNAL, service)

    # WHEN it keeps reporting passing (a heartbeat), then turns warning
    for _ in range(3):
        await pg.registry.report_health(INTERNAL, instance_id, HealthStatus.PASSING, "ok")
    unchanged = await pg.registry.watch(INTERNAL, service, index=current.index, wait_seconds=0.5)
    await pg.registry.report_health(INTERNAL, instance_id, HealthStatus.WARNING, "slow")
    changed = await pg.registry.watch(INTERNAL, service, index=current.index, wait_seconds=0.5)

    # THEN the heartbeats left the index alone and the change moved it
    assert (unchanged.index, unchanged.changed) == (current.index, False)
    assert changed.changed is True and changed.index > current.index


async def test_postgres_watch_sees_a_change_committed_while_it_starts(pg: Registered) -> None:
    # GIVEN watches started from the current index, one every few milliseconds, while a change commits
    service = pg.name("race")
    await pg.register(id=pg.name("race-1"), namespace=INTERNAL, service=service)
    current = await pg.registry.watch(INTERNAL, service)

    async def watch_after(delay: float) -> Any:
        await asyncio.sleep(delay)
        return await pg.registry.watch(INTERNAL, service, index=current.index, wait_seconds=120)

    async def change_after(delay: float) -> None:
        await asyncio.sleep(delay)
        await pg.register(id=pg.name("race-1"), namespace=INTERNAL, service=service, port=8100)

    # THEN every watch wakes with the change, however its start and the commit interleaved: a watch that
    # missed it would sit out its two minutes, far past this bound
    *results, _ = await asyncio.wait_for(
        asyncio.gather(*(watch_after(number * 0.004) for number in range(20)), change_after(0.04)), timeout=60
    )
    assert all(result.changed and result.index > current.index for result in results)


async def test_postgres_expiry_sweep_tells_watchers_of_a_lapsed_check(pg: Registered) -> None:
    # GIVEN a passing instance with a one-second TTL that stops reporting, and its index once it has lapsed
    service, instance_id = pg.name("lapse"), pg.name("lapse-1")
    await pg.register(id=instance_id, namespace=INTERNAL, service=service, check=ttl_check(1), status="passing")
    # (The index as registered: a host worker of another test sharing this database may run its own sweep
    # at any moment, so the test's sweep may not be the first to write the lapse down.)
    registered = await pg.registry.watch(INTERNAL, service)

    async def lapsed() -> bool:
        [instance] = await pg.registry.instances(INTERNAL, service)
        return (instance.status, instance.output) == (HealthStatus.CRITICAL, "TTL expired")

    await wait_until_async(lapsed, timeout=1.5, message="the silent instance's TTL did not lapse")

    # WHEN the sweep runs with a TTL that keeps the instance
    removed = await pg.registry.expire(ttl_seconds=3600)

    # THEN the instance stays, still critical, and the lapse moved the index (watchers wake), once only
    assert removed == []
    swept = await pg.registry.watch(INTERNAL, service, index=registered.index, wait_seconds=0)
    assert swept.changed is True
    await pg.registry.expire(ttl_seconds=3600)
    again = await pg.registry.watch(INTERNAL, service, index=swept.index, wait_seconds=0)
    assert again.changed is False
    [after] = await pg.registry.instances(INTERNAL, service)
    assert (after.status, after.output) == (HealthStatus.CRITICAL, "TTL expired")
