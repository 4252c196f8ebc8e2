"""Keeps the service registry in step with this host's containers: a running container with a published
port is an instance of its service in ``client-containers`` (passing when running, critical when its
health check fails), anything else is not in the registry at all.

Every round (``worker_registry_interval_seconds``) the host's containers are read from PostgreSQL and
compared with what this worker last wrote: new or changed instances are registered, gone ones
deregistered, and the others get a TTL pass, so an instance whose worker died lapses to critical after
its TTL and is removed after ``deregister_after`` (by Consul itself, or by ``expire`` on PostgreSQL, which
every worker runs). The first round after a start deregisters every non-running container of the host
once, in case the worker died between a stop and its deregistration.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from shared.db import Database
from shared.errors import DependencyError, NotFound
from shared.observability import get_logger, log_event
from shared.registry import CheckType, HealthCheck, HealthStatus, Instance, Namespace, ServiceRegistry
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings

logger = get_logger("worker")

REGISTERED_STATES = ("running", "unhealthy")
MOVING_OUTPUT = "moving to its tenant network"


@dataclass(frozen=True)
class Wanted:
    instance: Instance

    @property
    def key(self) -> tuple[Any, ...]:
        """What, when it changes, needs a new registration (health alone is a report)."""
        i = self.instance
        return (i.service, i.address, i.port, i.owner_id, tuple(sorted(i.meta.items())))


class RegistrationStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def on_host(self, host_id: str) -> list[dict[str, Any]]:
        """The host's containers that are not deleted: what the registry should hold of them."""
        return await self._db.fetch_all(
            "SELECT id, owner_id, name, coalesce(service, name) AS service, status, reason, ports, network_address "
            "FROM containers "
            "WHERE host_id = %s AND status <> 'deleted' ORDER BY id",
            (host_id,),
        )


def instance_of(row: dict[str, Any], settings: WorkerSettings) -> Instance | None:
    """The registry instance of a container record; None when it should not be in the registry."""
    ports = [port for port in row["ports"] or [] if port.get("host_port") and port.get("protocol", "tcp") == "tcp"]
    if row["status"] not in REGISTERED_STATES or not ports:
        return None
    first = ports[0]
    # Long enough to ride out a worker restart (a deploy) without pulling healthy containers out of traffic.
    ttl = max(10 * settings.worker_registry_interval_seconds, 15.0)
    healthy = row["status"] == "running"
    return Instance(
        id=str(row["id"]),
        namespace=Namespace.CLIENT_CONTAINERS,
        service=row["service"],
        owner_id=uuid.UUID(str(row["owner_id"])),
        address=first.get("host_ip") or settings.host_address,
        port=int(first["host_port"]),
        status=HealthStatus.PASSING if healthy else HealthStatus.CRITICAL,
        output="" if healthy else (row["reason"] or "health check failing")[:500],
        # The internal DNS (worker.internal_dns) answers <service>.internal with the tenant-network address and
        # <name>.<service>.internal with one replica; lb-runtime keeps to address:port (the published port).
        meta={
            "host_id": settings.host_id,
            "region": settings.region,
            "container_port": str(first["container_port"]),
            **({"network_address": row["network_address"]} if row.get("network_address") else {}),
            **({"container_name": row["name"]} if row.get("name") else {}),
        },
        check=HealthCheck(
            type=CheckType.TTL,
            interval_seconds=ttl,
            deregister_after_seconds=settings.worker_registry_deregister_after_seconds,
        ),
    )


class RegistrySync:
    def __init__(self, registry: ServiceRegistry, store: RegistrationStore, settings: WorkerSettings) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self._written: dict[str, Wanted] = {}
        self._reported_at: dict[str, float] = {}
        self._swept = False
        self._self: Instance | None = None
        self._self_written = False
        self._self_reported_at = 0.0
        self._expired_at = 0.0
        # Containers being moved between networks: registered as critical meanwhile, so traffic goes elsewhere.
        self._moving: set[str] = set()

    def announce_worker(self, address: str, port: int) -> None:
        """Register this worker in internal-services (its metrics port) with the next rounds."""
        self._self = Instance(
            id=f"host-worker-{self.settings.host_id}"[:128],
            namespace=Namespace.INTERNAL_SERVICES,
            service="host-worker",
            address=address,
            port=port,
            meta={"host_id": self.settings.host_id[:512]},
            check=HealthCheck(
                type=CheckType.TTL,
                interval_seconds=max(10 * self.settings.worker_registry_interval_seconds, 15.0),
                deregister_after_seconds=self.settings.worker_registry_deregister_after_seconds,
            ),
        )

    async def _announce_self(self) -> None:
        if self._self is None:
            return
        now = time.monotonic()
        if not self._self_written:
            await self.registry.register(self._self)
            self._self_written, self._self_reported_at = True, now
            return
        if now - self._self_reported_at < 5.0:
            return
        self._self_reported_at = now
        try:
            await self.registry.report_health(Namespace.INTERNAL_SERVICES, self._self.id, HealthStatus.PASSING)
        except NotFound:
            self._self_written = False

    async def withdraw_self(self) -> None:
        """Take this worker out of internal-services (a clean shutdown)."""
        if self._self is not None and self._self_written:
            await self.registry.deregister(Namespace.INTERNAL_SERVICES, self._self.id)
            self._self_written = False

    async def deregister(self, container_id: str) -> None:
        """Take a container out of the registry now (before it is stopped, so traffic drains first)."""
        self._written.pop(container_id, None)
        self._reported_at.pop(container_id, None)
        await self.registry.deregister(Namespace.CLIENT_CONTAINERS, container_id)

    async def set_moving(self, container_id: str, moving: bool) -> None:
        """Mark a container as moving between networks (critical: no new traffic) or done moving; the next
        round registers its new address."""
        if moving:
            self._moving.add(container_id)
            with contextlib.suppress(NotFound):
                await self.registry.report_health(
                    Namespace.CLIENT_CONTAINERS, container_id, HealthStatus.CRITICAL, MOVING_OUTPUT
                )
        else:
            self._moving.discard(container_id)
            await self.sync_round()

    async def sync_round(self) -> dict[str, int]:
        await self._announce_self()
        rows = await self.store.on_host(self.settings.host_id)
        wanted = {str(row["id"]): instance for row in rows if (instance := instance_of(row, self.settings))}
        for container_id in self._moving & set(wanted):
            wanted[container_id] = wanted[container_id].model_copy(
                update={"status": HealthStatus.CRITICAL, "output": MOVING_OUTPUT}
            )
        counts = {"registered": 0, "reported": 0, "deregistered": 0}
        now = time.monotonic()
        refresh = max(self.settings.worker_registry_interval_seconds, 1.0)
        for container_id, instance in wanted.items():
            previous = self._written.get(container_id)
            if previous is None or previous.key != Wanted(instance).key:
                await self.registry.register(instance)
                counts["registered"] += 1
            elif previous.instance.status != instance.status or now - self._reported_at.get(container_id, 0) >= refresh:
                try:
                    await self.registry.report_health(
                        Namespace.CLIENT_CONTAINERS, container_id, instance.status, instance.output
                    )
                except NotFound:
                    await self.registry.register(instance)  # expired meanwhile: register afresh
                    counts["registered"] += 1
                else:
                    counts["reported"] += 1
            else:
                continue
            self._written[container_id] = Wanted(instance)
            self._reported_at[container_id] = now
        stale = [container_id for container_id in self._written if container_id not in wanted]
        if not self._swept:
            stale += [str(row["id"]) for row in rows if str(row["id"]) not in wanted]
            self._swept = True
        for container_id in dict.fromkeys(stale):
            await self.deregister(container_id)
            counts["deregistered"] += 1
        return counts

    async def sync_and_expire(self) -> None:
        """A sync round, then (every half ``worker_registry_deregister_after_seconds``) an expiry of lapsed
        instances, which every worker runs for the PostgreSQL registry's sake."""
        counts = await self.sync_round()
        if counts["registered"] or counts["deregistered"]:
            log_event(logger, "registry synced", **counts)
        deregister_after = self.settings.worker_registry_deregister_after_seconds
        if time.monotonic() - self._expired_at >= deregister_after / 2:
            expired = await self.registry.expire(deregister_after)
            self._expired_at = time.monotonic()
            if expired:
                log_event(logger, "registry instances expired", count=len(expired))


def registry_sync_task(sync: RegistrySync) -> PeriodicTask:
    """Syncing (and expiring) every ``worker_registry_interval_seconds``; failures wait for the next round."""
    return PeriodicTask(
        "registry sync",
        sync.settings.worker_registry_interval_seconds,
        sync.sync_and_expire,
        retry_on=(DependencyError, OSError),
    )
