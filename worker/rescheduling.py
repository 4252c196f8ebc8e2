"""Host loss: containers of a host that stopped heartbeating are marked lost and moved to a live host.

Every worker runs ``reschedule_containers_of_down_hosts`` on each heartbeat round, after marking silent
hosts down. A container its tenant deleted is settled as deleted. Any other becomes ``lost`` and then
moves to the least busy live host: its ports are allocated there, it goes back to ``pending`` (or
``stopped``, as its tenant wants) with no Docker container yet, and a ``container.reconcile`` job goes to
the new host's queue. With no live host it stays lost, and the next round tries again; should its own
host heartbeat again first, it goes back to ``pending`` (or ``stopped``) there, with a job on that host's
queue (its Docker container is likely still there).

Each step is conditional on the host the container is expected on, and the move holds the container's
row lock (SKIP LOCKED), so two workers sweeping at once move a container once. The old host's Docker
container, should that host come back, is removed by its worker's orphan sweep.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from shared.config import HostSettings
from shared.errors import BerthError, DependencyError
from shared.host_ports import PortOwnerKind, allocate_port, release_ports
from shared.host_store import HostStore
from shared.jobs import HostJobQueues, Job, JobKind
from shared.observability import get_logger, log_event
from shared.registry import Namespace, ServiceRegistry

logger = get_logger("worker")


@dataclass
class SweepResult:
    """What one sweep did: containers marked lost, moved (id -> new host), settled as deleted, those that
    stay lost for want of a live host, and lost ones handed back to their host that came back (id -> host)."""

    lost: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    stranded: list[str] = field(default_factory=list)
    reclaimed: dict[str, str] = field(default_factory=dict)


def lost_reason(host_id: str) -> str:
    return f"host {host_id} stopped heartbeating"


async def reschedule_containers_of_down_hosts(
    hosts: HostStore, queues: HostJobQueues, settings: HostSettings, registry: ServiceRegistry | None = None
) -> SweepResult:
    """Settle, mark lost and move every container not deleted whose host is down (see the module doc). A
    container marked lost leaves the registry at once (with ``registry``): no traffic goes to a dead host."""
    result = SweepResult()
    for row in await hosts.reclaim_lost_containers():
        container_id, host_id = str(row["id"]), str(row["host_id"])
        result.reclaimed[container_id] = host_id
        log_event(logger, "lost container's host is back", container_id=container_id, host_id=host_id)
        await _send_reconcile(queues, host_id, container_id)
    for row in await hosts.containers_on_down_hosts():
        container_id, host_id = str(row["id"]), str(row["host_id"])
        try:
            if row["desired_state"] == "deleted":
                # Ports first: a sweep that dies in between finds the container again and finishes.
                await release_ports(hosts, PortOwnerKind.CONTAINER, uuid.UUID(container_id))
                if await hosts.settle_deleted_container(container_id, host_id):
                    result.deleted.append(container_id)
                    log_event(logger, "container deleted: its host is down", container_id=container_id, host_id=host_id)
                continue
            if row["status"] != "lost" and await hosts.mark_container_lost(container_id, host_id, lost_reason(host_id)):
                result.lost.append(container_id)
                log_event(logger, "container lost", container_id=container_id, host_id=host_id)
                if registry is not None:
                    await registry.deregister(Namespace.CLIENT_CONTAINERS, container_id)
            moved_to = await _move(
                hosts, queues, settings, container_id, host_id, row.get("host_region"), row.get("pinned_region")
            )
        except BerthError as exc:
            log_event(
                logger, "rescheduling a container failed; will retry", container_id=container_id, error=exc.message
            )
            continue
        if moved_to is None:
            continue
        if moved_to:
            result.moved[container_id] = moved_to
        else:
            result.stranded.append(container_id)
    return result


async def _move(
    hosts: HostStore,
    queues: HostJobQueues,
    settings: HostSettings,
    container_id: str,
    from_host: str,
    region: str | None = None,
    pinned_region: str | None = None,
) -> str | None:
    """Move the lost container off ``from_host``: to a live host of ``pinned_region`` (the region it was asked
    to run in) and nowhere else, or, without one, of its old host's ``region`` first, else of any. The new
    host's id; "" when no host is live (there); None when there is nothing to move (another worker moved it,
    or holds it now, or its host came back)."""
    silence = settings.host_down_after_seconds
    target = None
    if pinned_region is not None or region is not None:
        target = await hosts.least_busy_host(silence, exclude=[from_host], region=pinned_region or region)
    if target is None and pinned_region is None:
        target = await hosts.least_busy_host(silence, exclude=[from_host])
    if target is None:
        return ""
    owner = uuid.UUID(container_id)
    async with hosts.lock_lost_container(container_id, from_host) as lost:
        if lost is None:
            return None
        # The old host's ports, and any a move that died half-way left on another host, go first.
        await release_ports(hosts, PortOwnerKind.CONTAINER, owner)
        ports = []
        try:
            for port in lost.ports:
                host_port = await allocate_port(
                    hosts, target["id"], PortOwnerKind.CONTAINER, owner, settings.host_port_range
                )
                ports.append({**port, "host_ip": target["address"], "host_port": host_port})
        except BaseException:
            # The move rolls back (the container stays lost); the ports claimed so far are freed.
            await release_ports(hosts, PortOwnerKind.CONTAINER, owner)
            raise
        status = "stopped" if lost.desired_state == "stopped" else "pending"
        await lost.move(target["id"], ports, status, f"moved from host {from_host}, which stopped heartbeating")
    log_event(
        logger,
        "container moved",
        container_id=container_id,
        from_host=from_host,
        to_host=target["id"],
        ports=[port["host_port"] for port in ports],
    )
    # Sent once the move is committed: the new host's worker must find the container on its host.
    await _send_reconcile(queues, target["id"], container_id)
    return str(target["id"])


async def _send_reconcile(queues: HostJobQueues, host_id: str, container_id: str) -> None:
    """Queue the host's worker to converge the container; a job that cannot be sent leaves the container
    pending there, for that host's reconciler to pick up."""
    try:
        await queues.send(host_id, Job(JobKind.RECONCILE_CONTAINER, {"container_id": container_id}))
    except DependencyError as exc:
        log_event(logger, "container job not sent", container_id=container_id, host_id=host_id, error=exc.message)
