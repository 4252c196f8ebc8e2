"""Placing a new container: the one path by which every container comes to exist.

The containers function places a single container a tenant asked for; the host workers' rollout driver
(worker/rollouts.py) places a service's replicas. Both go through ``place_container``: pick the least busy
live host, allocate a host port per published port, write the record (``insert``, the caller's SQL), and
queue a ``container.reconcile`` job on that host's queue. Ports allocated for a record that was never
written are released again, and so is a record whose job the queue refused (the caller answers "try again":
its retry must not find the name taken). A record written but whose job was lost (a process killed between
the two) is found ``pending`` by the host's reconciler, which converges it as a stuck container.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shared.config import FunctionSettings
from shared.errors import DependencyError, ServiceUnavailable
from shared.host_ports import PortOwnerKind, allocate_port, release_ports
from shared.host_store import HostStore
from shared.jobs import HostJobQueues, Job, JobKind

# insert(container id, host id, ports with host_ip and host_port) -> the written record, or None when its
# name is taken.
Insert = Callable[[uuid.UUID, str, list[dict[str, Any]]], Awaitable[dict[str, Any] | None]]


async def place_container(
    hosts: HostStore,
    queue: HostJobQueues,
    settings: FunctionSettings,
    ports: list[dict[str, Any]],
    insert: Insert,
    region: str | None = None,
) -> dict[str, Any] | None:
    """Schedule a container onto a live host (of ``region`` when one is named) and queue its start; the
    record, or None when ``insert`` found its name taken (nothing is left allocated then). ``ports`` are
    ``{container_port, protocol}``."""
    host = await hosts.least_busy_host(settings.host_down_after_seconds, region=region)
    if host is None:
        where = f" in region {region}" if region is not None else ""
        raise ServiceUnavailable(f"No container host{where} is available right now; try again in a minute.")
    container_id = uuid.uuid4()
    placed: list[dict[str, Any]] = []
    try:
        for port in ports:
            host_port = await allocate_port(
                hosts, host["id"], PortOwnerKind.CONTAINER, container_id, settings.host_port_range
            )
            placed.append(
                {
                    "container_port": port["container_port"],
                    "protocol": port.get("protocol", "tcp"),
                    "host_ip": host["address"],
                    "host_port": host_port,
                }
            )
        row = await insert(container_id, host["id"], placed)
    except BaseException:
        await release_ports(hosts, PortOwnerKind.CONTAINER, container_id)
        raise
    if row is None:
        await release_ports(hosts, PortOwnerKind.CONTAINER, container_id)
        return None
    try:
        await queue.send(host["id"], Job(JobKind.RECONCILE_CONTAINER, {"container_id": str(container_id)}))
    except DependencyError:
        # Its host's queue cannot take the job (unreachable, or gone with its host): the caller's error says
        # try again, so the record goes rather than hold the name for a container nothing would start soon.
        if await hosts.withdraw_placement(container_id):
            await release_ports(hosts, PortOwnerKind.CONTAINER, container_id)
        raise
    return row
