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

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from shared.db import Database
from shared.errors import DependencyError, NotFound
from shared.observability import get_logger, log_event
from shared.registry import CheckType, HealthCheck, HealthStatus, Instance, Namespace, ServiceRegistry
from worker.settings import WorkerSettings

logger = get_logger("worker")

REGISTERED_STATES = ("running", "unhealthy")


@dataclass(frozen=True)
class Wanted:
    instance: Instance

    @property
    def key(self) -> tuple[Any, ...]:
        """What, when it changes, needs a new registration (health alone is a report)."""
        i = self.instance
        return (i.service, i.address, i.port, i.owner_id)


class RegistrationStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def on_host(self, host_id: str) -> list[dict[str, Any]]:
        """The host's containers that are not deleted: what the registry should hold of them."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT id, owner_id, coalesce(service, name) AS service, status, reason, ports FROM containers "
                "WHERE host_id = %s AND status <> 'deleted' ORDER BY id",
                (host_id,),
            )
            return await cursor.fetchall()


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
        meta={"host_id": settings.host_id, "container_port": str(first["container_port"])},
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

    async def sync_round(self) -> dict[str, int]:
        await self._announce_self()
        rows = await self.store.on_host(self.settings.host_id)
        wanted = {str(row["id"]): instance for row in rows if (instance := instance_of(row, self.settings))}
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


async def run_registry_sync(sync: RegistrySync, stopping: asyncio.Event) -> None:
    """Sync every ``worker_registry_interval_seconds`` until ``stopping``; expire lapsed instances too."""
    settings = sync.settings
    last_expiry = 0.0
    while not stopping.is_set():
        try:
            counts = await sync.sync_round()
            if counts["registered"] or counts["deregistered"]:
                log_event(logger, "registry synced", **counts)
            if time.monotonic() - last_expiry >= settings.worker_registry_deregister_after_seconds / 2:
                expired = await sync.registry.expire(settings.worker_registry_deregister_after_seconds)
                last_expiry = time.monotonic()
                if expired:
                    log_event(logger, "registry instances expired", count=len(expired))
        except (DependencyError, OSError) as exc:
            log_event(logger, "registry sync failed; will retry", error=str(exc))
        except Exception:
            logger.exception("registry sync crashed; will retry")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), settings.worker_registry_interval_seconds)
