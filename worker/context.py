"""What every job and periodic task of a host worker works with: its settings, stores and container runtime."""

from __future__ import annotations

from dataclasses import dataclass

from shared.host_store import HostStore
from shared.storage import ObjectStore
from worker.container_runtime import ContainerRuntime
from worker.container_store import WorkerContainerStore
from worker.log_store import LogStore
from worker.registration import RegistrySync
from worker.settings import WorkerSettings
from worker.stats_store import StatsStore
from worker.store import WorkerImageStore
from worker.tenant_networks import TenantNetworks


@dataclass
class JobContext:
    settings: WorkerSettings
    images: WorkerImageStore
    objects: ObjectStore
    runtime: ContainerRuntime
    containers: WorkerContainerStore
    hosts: HostStore
    # Where final log lines are shipped before a container is removed, and the registry a container leaves
    # before it is stopped (so traffic drains first); a context without them (a test's) skips those steps.
    logs: LogStore | None = None
    registry_sync: RegistrySync | None = None
    # This host's tenant networks: a context without them (a test's) puts containers on the legacy shared one.
    networks: TenantNetworks | None = None
    # Where a container's last stats sample goes just before it is stopped, so metering counts its CPU to the
    # end (worker.stats.sample_before_stop); a context without it (a test's) skips that sample.
    stats: StatsStore | None = None
