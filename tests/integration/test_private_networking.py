"""Tenant networks on the real Docker Engine, the host firewall, and the internal DNS on a real socket."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import docker
import pytest

from tests.conftest import RUN_ID
from tests.support.docker_images import build_test_image
from worker.firewall import CHAIN, install_tenant_firewall
from worker.internal_dns import Asker, Directory, InternalDns, Replica, Resolver, asker_by_network
from worker.network_runtime import DockerNetworkRuntime
from worker.tenant_networks import TenantNetworks

pytestmark = pytest.mark.docker

POOL = "10.213.0.0/16"


class OneService(Directory):
    """A directory with one service per tenant: ``web`` with one replica."""

    def __init__(self) -> None:
        self.asked: list[Asker] = []

    async def replicas(self, asker: Asker, service: str) -> list[Replica]:
        self.asked.append(asker)
        return [Replica("web-1", "10.213.255.1", 8080)] if service == "web" and asker.owner_id else []


@pytest.fixture
async def networks(docker_client: Any) -> AsyncIterator[TenantNetworks]:
    cluster = f"test-{RUN_ID}"
    found = TenantNetworks(
        DockerNetworkRuntime(timeout=60),
        cluster_id=cluster,
        host_id=f"net-{uuid.uuid4().hex[:8]}",
        pool=POOL,
        prefix=26,
    )
    yield found
    for network in docker_client.api.networks(filters={"label": f"berth.host={found.host_id}"}):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_network(network["Id"])


async def test_each_tenant_gets_a_labelled_bridge_with_its_own_subnet(
    networks: TenantNetworks, docker_client: Any
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    async with networks.lock(a):
        first = await networks.ensure(a)
    async with networks.lock(b):
        second = await networks.ensure(b)
    async with networks.lock(a):
        assert await networks.ensure(a) == first  # found again, not made twice

    assert not first.subnet.overlaps(second.subnet)
    for network, owner in ((first, a), (second, b)):
        assert network.subnet.subnet_of(ipaddress.IPv4Network(POOL)) and network.subnet.prefixlen == 26
        details = docker_client.api.inspect_network(network.name)
        assert details["Labels"]["berth.owner"] == str(owner)
        assert details["Labels"]["berth.network"] == "tenant"
        assert details["Options"]["com.docker.network.bridge.name"] == network.bridge
        assert network.bridge.startswith("bt") and len(network.bridge) <= 15
    assert networks.owner_of(str(first.gateway + 5)) == a and networks.owner_of(str(second.gateway + 5)) == b
    assert networks.owner_of(str(first.gateway)) is None  # the gateway is the host's

    # A worker started afresh finds them again
    again = TenantNetworks(
        networks.runtime, cluster_id=networks.cluster_id, host_id=networks.host_id, pool=POOL, prefix=26
    )
    assert {n.name for n in await again.load()} == {first.name, second.name}


async def test_unused_networks_are_removed_and_used_ones_kept(networks: TenantNetworks, docker_client: Any) -> None:
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    for owner in (kept, dropped):
        async with networks.lock(owner):
            await networks.ensure(owner)
    busy = next(n for n in networks.known() if n.owner_id == kept)
    # A created (never started) container that names the network keeps it in use
    tag = f"berth-test/web:{RUN_ID}-networks"
    build_test_image(docker_client, "web", tag)
    created = docker_client.api.create_container(
        tag, host_config=docker_client.api.create_host_config(network_mode=busy.name)
    )
    try:
        removed = await networks.remove_unused()
        assert len(removed) == 1 and busy.name not in removed
        assert {n.owner_id for n in networks.known()} == {kept}
        assert docker_client.api.inspect_network(busy.name)["Name"] == busy.name
    finally:
        docker_client.api.remove_container(created["Id"], force=True)
        docker_client.images.remove(tag)
    assert await networks.remove_unused() == [busy.name]


class HidingRuntime(DockerNetworkRuntime):
    """Docker's runtime whose network list leaves out the ``hidden`` subnets, as a list that lags a removal."""

    def __init__(self, hidden: set[str]) -> None:
        super().__init__(timeout=60)
        self.hidden = hidden

    async def used_subnets(self) -> list[str]:
        return [subnet for subnet in await super().used_subnets() if subnet not in self.hidden]


async def test_a_subnet_docker_refuses_is_skipped_even_when_its_list_does_not_show_it(
    networks: TenantNetworks,
) -> None:
    held = await networks.ensure(uuid.uuid4())  # lowest free subnet, held by a network of its own
    hiding = TenantNetworks(
        HidingRuntime({str(held.subnet)}),
        cluster_id=networks.cluster_id,
        host_id=networks.host_id,
        pool=POOL,
        prefix=26,
    )
    owner = uuid.uuid4()
    async with hiding.lock(owner):
        claimed = await hiding.ensure(owner)  # tries the held subnet first, is refused, takes another
    assert not claimed.subnet.overlaps(held.subnet)
    assert claimed.subnet.subnet_of(ipaddress.IPv4Network(POOL))


async def test_firewall_install_is_idempotent() -> None:
    await install_tenant_firewall(POOL)
    assert await install_tenant_firewall(POOL) == 0
    rules = subprocess.run(["iptables", "-S", CHAIN], capture_output=True, text=True, check=True).stdout.splitlines()
    assert rules[-1] == f"-A {CHAIN} -i bt+ -j DROP"
    inputs = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True, check=True).stdout
    assert inputs.count(f"-j {CHAIN}") == 1


async def test_the_dns_server_answers_on_the_gateway_and_stops_with_the_network(networks: TenantNetworks) -> None:
    directory = OneService()
    server = InternalDns(Resolver(directory, asker_by_network(networks)), port=53)
    networks.listener = server
    owner = uuid.uuid4()
    async with networks.lock(owner):
        network = await networks.ensure(owner)
    assert server.addresses == [str(network.gateway)]
    try:
        # Asked from the host (a local source address): the platform's names only, so a tenant's is NXDOMAIN
        for query in (dns.message.make_query("web.internal", "A"),):
            answer = await dns.asyncquery.udp(query, str(network.gateway), timeout=2)
            assert answer.rcode() == dns.rcode.NXDOMAIN
            answer = await dns.asyncquery.tcp(query, str(network.gateway), timeout=2)
            assert answer.rcode() == dns.rcode.NXDOMAIN
        assert directory.asked and all(asker.owner_id is None for asker in directory.asked)
    finally:
        assert await networks.remove_unused() == [network.name]
    assert server.addresses == []  # its sockets are closed (the address may be another network's by now)
