"""One private bridge network per tenant per host: each tenant's containers join only their own network.

A tenant network is created on demand (when the tenant's first container is created on this host) and
removed once no container (running or not) of any kind is configured to join it. Its name carries a key of
this worker's cluster and host id, so several workers sharing one Docker Engine (tests run several) each own
their networks; its Linux bridge is ``bt`` + a hash (``com.docker.network.bridge.name``), so the host firewall
(worker.firewall) matches every tenant bridge as ``-i bt+``. Subnets are taken explicitly from
``tenant_subnet_pool`` in blocks of ``/tenant_subnet_prefix`` (Docker's default pools hold ~31 networks): the
first block overlapping no Docker network, tried again with the next one when another process took it first.

Isolation between tenants is Docker's: its DOCKER-ISOLATION chains drop bridge-to-bridge forwarding, and the
host's own addresses are closed to tenant bridges by worker.firewall (but for the internal DNS on port 53).

Every change of one tenant's network (ensure, attach, removal) happens under that tenant's lock, so the garbage
collector never removes a network a container is about to be created on.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from shared.observability import get_logger, log_event
from worker.container_runtime import CLUSTER_LABEL, OWNER_LABEL
from worker.network_runtime import BridgeNetwork, NetworkRuntime, SubnetTaken

logger = get_logger("worker")

TENANT_NETWORK_PREFIX = "berth-t-"
BRIDGE_PREFIX = "bt"  # the firewall's `-i bt+`; never used by Docker's own names (docker0, br-<id>)
NETWORK_LABEL = "berth.network"
TENANT_NETWORK_KIND = "tenant"
HOST_LABEL = "berth.host"
# The one network every customer container joined before tenant networks (migrated away by the reconciler).
LEGACY_CUSTOMER_NETWORK = "berth-customers"
MAX_SUBNET_TRIES = 8


@dataclass(frozen=True)
class TenantNetwork:
    name: str
    owner_id: uuid.UUID
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    bridge: str


class NetworkListener(Protocol):
    """Told when a tenant network appears or goes (the internal DNS serves on each network's gateway)."""

    async def network_added(self, network: TenantNetwork) -> None:
        """A tenant network exists on this host (created now or found at start)."""
        ...

    async def network_removed(self, network: TenantNetwork) -> None:
        """A tenant network was removed."""
        ...


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def host_key(cluster_id: str, host_id: str) -> str:
    """A short key of (cluster, host): part of each network's name, so workers never share networks."""
    return _digest(cluster_id, host_id)[:10]


def tenant_network_name(cluster_id: str, host_id: str, owner_id: uuid.UUID | str) -> str:
    return f"{TENANT_NETWORK_PREFIX}{host_key(cluster_id, host_id)}-{owner_id}"


def bridge_name(cluster_id: str, host_id: str, owner_id: uuid.UUID | str) -> str:
    """The bridge's interface name: ``bt`` + 13 hex digits (Linux allows 15 characters)."""
    return BRIDGE_PREFIX + _digest(cluster_id, host_id, str(owner_id))[:13]


def free_subnets(pool: ipaddress.IPv4Network, prefix: int, used: Iterable[str]) -> Iterator[ipaddress.IPv4Network]:
    """The pool's /prefix blocks that overlap none of the ``used`` subnets, lowest first."""
    taken = []
    for subnet in used:
        try:
            taken.append(ipaddress.ip_network(subnet, strict=False))
        except ValueError:
            continue
    taken4 = [net for net in taken if isinstance(net, ipaddress.IPv4Network)]
    for candidate in pool.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(net) for net in taken4):
            yield candidate


def is_tenant_network(name: str) -> bool:
    return name.startswith(TENANT_NETWORK_PREFIX)


class TenantNetworks:
    """This host's tenant networks: created on demand, found again at start, removed when unused."""

    def __init__(
        self,
        runtime: NetworkRuntime,
        *,
        cluster_id: str,
        host_id: str,
        pool: str,
        prefix: int,
        listener: NetworkListener | None = None,
    ) -> None:
        self.runtime = runtime
        self.cluster_id = cluster_id
        self.host_id = host_id
        self.pool = ipaddress.IPv4Network(pool)
        self.prefix = prefix
        self.listener = listener
        self._networks: dict[uuid.UUID, TenantNetwork] = {}
        self._locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------------------------------------ lookups

    def lock(self, owner_id: uuid.UUID) -> asyncio.Lock:
        """Held while a tenant's network is ensured and a container created on it, and while it is removed."""
        lock = self._locks.get(owner_id)
        if lock is None:
            lock = self._locks[owner_id] = asyncio.Lock()
        return lock

    def known(self) -> list[TenantNetwork]:
        return list(self._networks.values())

    def owner_of(self, address: str) -> uuid.UUID | None:
        """The tenant whose network's subnet holds ``address`` (a query's source); None for any other."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        for network in self._networks.values():
            if ip in network.subnet and ip != network.gateway:
                return network.owner_id
        return None

    def is_gateway(self, address: str) -> bool:
        """Whether ``address`` is one of this host's tenant gateways (the host itself asking)."""
        return any(str(network.gateway) == address for network in self._networks.values())

    def _labels(self, owner_id: uuid.UUID) -> dict[str, str]:
        return {
            NETWORK_LABEL: TENANT_NETWORK_KIND,
            OWNER_LABEL: str(owner_id),
            CLUSTER_LABEL: self.cluster_id,
            HOST_LABEL: self.host_id[:255],
        }

    def _adopt(self, found: BridgeNetwork) -> TenantNetwork | None:
        owner = found.labels.get(OWNER_LABEL)
        if found.labels.get(HOST_LABEL) != self.host_id[:255] or not found.subnet or not found.gateway or not owner:
            return None
        network = TenantNetwork(
            name=found.name,
            owner_id=uuid.UUID(owner),
            subnet=ipaddress.IPv4Network(found.subnet),
            gateway=ipaddress.IPv4Address(found.gateway),
            bridge=found.bridge or "",
        )
        self._networks[network.owner_id] = network
        return network

    # ------------------------------------------------------------------------------------------ changes

    async def load(self) -> list[TenantNetwork]:
        """Find this host's tenant networks (after a restart) and tell the listener of each."""
        found = await self.runtime.list_networks(f"{CLUSTER_LABEL}={self.cluster_id}")
        loaded = []
        for raw in found:
            if raw.labels.get(NETWORK_LABEL) == TENANT_NETWORK_KIND and (network := self._adopt(raw)):
                loaded.append(network)
                if self.listener is not None:
                    await self.listener.network_added(network)
        return loaded

    async def ensure(self, owner_id: uuid.UUID) -> TenantNetwork:
        """The tenant's network on this host, created when missing; the caller holds ``lock(owner_id)``."""
        name = tenant_network_name(self.cluster_id, self.host_id, owner_id)
        network = self._networks.get(owner_id)
        existing = [raw for raw in await self.runtime.list_networks(f"{OWNER_LABEL}={owner_id}") if raw.name == name]
        if existing:
            if network is None or network.name != name:
                network = self._adopt(existing[0])
                if network is not None and self.listener is not None:
                    await self.listener.network_added(network)
            if network is not None:
                return network
        self._networks.pop(owner_id, None)
        refused: list[str] = []
        for _ in range(MAX_SUBNET_TRIES):
            # Docker may refuse a subnet its network list does not show (a claim in CI spent all its tries,
            # each on the same refused subnet, it seems): a refused subnet is skipped, not asked for again
            used = [*await self.runtime.used_subnets(), *refused]
            subnet = next(free_subnets(self.pool, self.prefix, used), None)
            if subnet is None:
                raise SubnetTaken(f"no free /{self.prefix} left in the tenant subnet pool {self.pool}")
            gateway = next(subnet.hosts())
            try:
                created = await self.runtime.create_bridge(
                    name,
                    subnet=str(subnet),
                    gateway=str(gateway),
                    bridge=bridge_name(self.cluster_id, self.host_id, owner_id),
                    labels=self._labels(owner_id),
                )
            except SubnetTaken:
                refused.append(str(subnet))  # another process took it between our look and our create
                continue
            network = self._adopt(created)
            assert network is not None
            log_event(logger, "tenant network created", network=name, subnet=str(subnet), bridge=network.bridge)
            if self.listener is not None:
                await self.listener.network_added(network)
            return network
        raise SubnetTaken(f"could not claim a free subnet in {self.pool} after {MAX_SUBNET_TRIES} tries")

    async def remove_unused(self) -> list[str]:
        """Remove this host's tenant networks no container joins any more (and the legacy shared network
        once nothing joins it); returns the names removed."""
        removed = []
        for network in list(self._networks.values()):
            async with self.lock(network.owner_id):
                if network.name in await self.runtime.networks_in_use():
                    continue
                if self.listener is not None:
                    await self.listener.network_removed(network)
                await self.runtime.remove_network(network.name)
                self._networks.pop(network.owner_id, None)
                removed.append(network.name)
                log_event(logger, "tenant network removed: no container left on it", network=network.name)
        return removed

    async def move_to_tenant_network(self, owner_id: uuid.UUID, docker_id: str) -> TenantNetwork:
        """Attach a container of the legacy shared network to its tenant's network, then detach it from the
        shared one (its published host ports stay: Docker moves the mapping to the remaining network)."""
        async with self.lock(owner_id):
            network = await self.ensure(owner_id)
            await self.runtime.connect(network.name, docker_id)
        await self.runtime.disconnect(LEGACY_CUSTOMER_NETWORK, docker_id)
        log_event(logger, "container moved to its tenant network", docker_id=docker_id, network=network.name)
        return network
