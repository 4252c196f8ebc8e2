"""Hosts in regions against the real PostgreSQL and SQS (moto): a host is registered with its worker's
region, placement can be kept to a region, a lost host's containers move to a live host of the same region
before any other, and a worker registers its containers with their region for lb-runtime to read."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from shared.db import Database
from shared.host_store import HostStore
from shared.jobs import SqsHostJobQueues
from tests.integration import test_rescheduling as rescheduling
from tests.integration.test_rescheduling import (
    Tenant,
    container,
    go_silent,
    live_host,
    place_container,
    sweep_settings,
)
from worker.hosts import mark_stale_hosts_down, register_host, register_this_host
from worker.registration import instance_of
from worker.rescheduling import reschedule_containers_of_down_hosts
from worker.settings import WorkerSettings

pytestmark = pytest.mark.docker

# The rescheduling tests' fixtures: the test database, its host store, a tenant with an image, the test's hosts.
database = rescheduling.database
store = rescheduling.store
web_image = rescheduling.web_image
tenant = rescheduling.tenant
placement = rescheduling.placement


async def test_a_host_is_registered_in_its_workers_region(store: HostStore, placement: Callable[[str], str]) -> None:
    # GIVEN a worker configured with BERTH_REGION=eu-west
    host_id = placement("regional")
    settings = WorkerSettings(host_id=host_id, region="eu-west")
    # WHEN it registers its host THEN the host row carries the region, and placement can ask for it
    host = await register_this_host(store, settings)
    assert host.region == "eu-west"
    assert (await store.least_busy_host(30, region="eu-west") or {}).get("id") == host_id
    assert await store.least_busy_host(30, region="nowhere") is None
    # AND a host registered without one is in the default region
    other = placement("default")
    assert (await register_host(store, other, "127.0.0.1", 1, 512)).region == "local"


def test_region_setting_is_validated() -> None:
    with pytest.raises(ValueError):
        WorkerSettings(region="Europe West")
    assert WorkerSettings().region == "local"


def test_registered_instances_carry_the_region() -> None:
    settings = WorkerSettings(host_id="h1", region="us-east")
    row = {
        "id": uuid.uuid4(),
        "service": "web",
        "owner_id": uuid.uuid4(),
        "status": "running",
        "reason": None,
        "name": "web-1",
        "ports": [{"container_port": 8080, "protocol": "tcp", "host_ip": "127.0.0.1", "host_port": 31000}],
    }
    instance = instance_of(row, settings)
    assert instance is not None and instance.meta["region"] == "us-east"


async def test_a_lost_container_moves_within_its_region_first(
    database: Database, store: HostStore, tenant: Tenant, placement: Callable[[str], str]
) -> None:
    # GIVEN a dead host in region r, a live but busier host in r, and an idle live host in another region
    region = f"r{uuid.uuid4().hex[:6]}"
    dead, same, other = placement("dead"), placement("same"), placement("other")
    await register_host(store, dead, "127.0.0.1", 2, 2048, region)
    moving = await place_container(database, store, tenant, dead)
    await live_host(store, same)
    await store.upsert(same, "127.0.0.1", 2, 2048, region)
    await place_container(database, store, tenant, same)  # busier than `other`
    await live_host(store, other)
    await go_silent(database, dead)
    await mark_stale_hosts_down(store, 30)
    # WHEN the lost host's containers are rescheduled
    await reschedule_containers_of_down_hosts(store, SqsHostJobQueues(sweep_settings()), sweep_settings())
    # THEN the container went to the host of its region, not to the least busy one elsewhere
    assert (await container(database, moving))["host_id"] == same


async def test_a_container_pinned_to_a_region_never_leaves_it(
    database: Database, store: HostStore, tenant: Tenant, placement: Callable[[str], str]
) -> None:
    # GIVEN a container asked for region r on a host of r that is lost, and only a live host elsewhere
    region = f"r{uuid.uuid4().hex[:6]}"
    dead, other = placement("dead"), placement("other")
    await register_host(store, dead, "127.0.0.1", 2, 2048, region)
    pinned = await place_container(database, store, tenant, dead)
    async with database.transaction() as conn:
        await conn.execute("UPDATE containers SET region = %s WHERE id = %s", (region, pinned))
    await live_host(store, other)
    await go_silent(database, dead)
    await mark_stale_hosts_down(store, 30)
    # WHEN the lost host's containers are rescheduled
    result = await reschedule_containers_of_down_hosts(store, SqsHostJobQueues(sweep_settings()), sweep_settings())
    # THEN it stays lost on its host (stranded) rather than run outside its region
    row = await container(database, pinned)
    assert (row["host_id"], row["status"]) == (dead, "lost")
    assert pinned in result.stranded or pinned not in result.moved
    # AND once a host of its region is live, the next sweep moves it there
    same = placement("same")
    await live_host(store, same)
    await store.upsert(same, "127.0.0.1", 2, 2048, region)
    await reschedule_containers_of_down_hosts(store, SqsHostJobQueues(sweep_settings()), sweep_settings())
    assert (await container(database, pinned))["host_id"] == same
