"""A host worker's private networking, assembled: tenant networks, the host firewall and the internal DNS.

``start`` runs before the worker takes any job: it installs the firewall (worker.firewall; a failure stops the
worker, since tenant containers would otherwise reach the host), finds this host's tenant networks again and
starts the internal DNS on each one's gateway. Its periodic task removes networks no container joins any more
and listens again where a listener could not start; when the loop ends the DNS servers close. The legacy shared
network ``berth-customers`` is left in place (another installation or an older worker on the same Docker
Engine may still create containers on it): remove it by hand once ``docker network inspect`` shows it empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import DependencyError
from shared.registry import ServiceRegistry
from worker.container_runtime import RuntimeFinal, RuntimeRetryable
from worker.firewall import install_tenant_firewall
from worker.internal_dns import Directory, Forwarder, InternalDns, Resolver, asker_by_network, upstream_nameservers
from worker.network_runtime import DockerNetworkRuntime, NetworkRuntime
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings
from worker.tenant_networks import TenantNetworks


@dataclass
class PrivateNetworking:
    settings: WorkerSettings
    networks: TenantNetworks
    dns: InternalDns | None

    @classmethod
    def build(
        cls, settings: WorkerSettings, registry: ServiceRegistry | None, runtime: NetworkRuntime | None = None
    ) -> PrivateNetworking:
        networks = TenantNetworks(
            runtime or DockerNetworkRuntime(settings.docker_host, settings.docker_timeout_seconds),
            cluster_id=settings.cluster_id,
            host_id=settings.host_id,
            pool=settings.tenant_subnet_pool,
            prefix=settings.tenant_subnet_prefix,
        )
        dns = None
        if registry is not None and settings.worker_dns_port:
            resolver = Resolver(
                Directory(registry, settings.host_id),
                asker_by_network(networks),
                Forwarder(upstream_nameservers(settings.worker_dns_upstream)),
            )
            dns = networks.listener = InternalDns(resolver, settings.worker_dns_port)
        return cls(settings, networks, dns)

    async def start(self) -> None:
        """Close the host to tenant bridges, then find this host's networks and serve DNS on them."""
        if self.settings.worker_firewall:
            await install_tenant_firewall(self.settings.tenant_subnet_pool, self.settings.worker_dns_port or 53)
        await self.networks.load()

    async def maintain(self) -> None:
        """Remove unused networks; listen again where a DNS listener failed to start."""
        await self.networks.remove_unused()
        if self.dns is not None:
            for network in self.networks.known():
                await self.dns.network_added(network)

    async def close(self) -> None:
        if self.dns is not None:
            await self.dns.close()

    def periodic_task(self) -> PeriodicTask:
        return PeriodicTask(
            "tenant networks",
            self.settings.worker_reconcile_interval_seconds,
            self.maintain,
            retry_on=(DependencyError, RuntimeRetryable, RuntimeFinal, OSError),
            close=self.close,
        )
