"""Container jobs: converge a host's Docker on what the tenant wants of one container.

``container.reconcile`` is idempotent: it looks at the record (desired state) and at Docker (the container
labelled with the record's id) and does only what is missing, so a redelivered or repeated job never makes
a second container. Jobs for one container run one at a time in this process.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import Any

from shared.container_runtime import CONTAINER_ID_LABEL, OWNER_LABEL, ContainerSpec
from shared.host_ports import release_ports
from shared.observability import get_logger, log_event
from worker.image_jobs import ImageJobContext, JobFailed, JobRetry

logger = get_logger("worker")

CUSTOMER_NETWORK = "berth-customers"
PORT_OWNER_KIND = "container"
STOP_TIMEOUT_SECONDS = 10

# One lock per container while jobs for it run or wait; unused locks vanish with their last reference.
_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def docker_name(container_id: str) -> str:
    return f"berth-{container_id}"


async def _find(context: ImageJobContext, row: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The Docker container of the record (by its recorded id, else by its label) and its state."""
    runtime = context.runtime
    if row["docker_id"]:
        state = await runtime.container_state(row["docker_id"])
        if state is not None:
            return row["docker_id"], state
    container_id = str(row["id"])
    for found in await runtime.list_labelled_containers(CONTAINER_ID_LABEL):
        if found["labels"].get(CONTAINER_ID_LABEL) == container_id:
            return found["id"], await runtime.container_state(found["id"])
    return None, None


def _spec(context: ImageJobContext, row: dict[str, Any]) -> ContainerSpec:
    reference = row["reference"] or row["docker_image_id"]
    if not reference:
        raise JobFailed("The container's image is not on any host; upload it again.")
    ports = row["ports"] or []
    return ContainerSpec(
        name=docker_name(str(row["id"])),
        image=reference,
        network=CUSTOMER_NETWORK,
        labels={CONTAINER_ID_LABEL: str(row["id"]), OWNER_LABEL: str(row["owner_id"])},
        command=row["command"],
        env=row["env"] or {},
        container_ports=[(port["container_port"], port.get("protocol", "tcp")) for port in ports],
        host_bind=context.settings.host_address,
        host_ports={port["container_port"]: port["host_port"] for port in ports if port.get("host_port")},
        cpu=float(row["cpu"]),
        memory_mb=int(row["memory_mb"]),
    )


async def reconcile_container(context: ImageJobContext, payload: dict[str, Any]) -> None:
    container_id = str(payload.get("container_id") or "")
    lock = _locks.get(container_id)
    if lock is None:
        lock = _locks[container_id] = asyncio.Lock()
    async with lock:
        await _reconcile(context, container_id, restart=bool(payload.get("restart")))


async def _reconcile(context: ImageJobContext, container_id: str, *, restart: bool) -> None:
    store = context.containers
    if store is None:
        raise JobFailed("this worker has no container store")
    row = await store.get(container_id)
    if row is None:
        log_event(logger, "container job skipped: no such container", container_id=container_id)
        return
    if row["host_id"] != context.settings.host_id:
        # Another host's container: leave the message for that host's worker.
        raise JobRetry(f"container {container_id} lives on host {row['host_id']}, not {context.settings.host_id}")
    desired = row["desired_state"]
    runtime = context.runtime
    docker_id, state = await _find(context, row)

    if desired == "deleted":
        if docker_id is not None:
            await runtime.remove_container(docker_id)
        if context.hosts is not None:
            await release_ports(context.hosts, PORT_OWNER_KIND, uuid.UUID(container_id))
        await store.set_docker_id(container_id, None)
        await store.set_status(container_id, "deleted", "deleted")
        log_event(logger, "container deleted", container_id=container_id)
        return

    running = state is not None and state.get("status") in ("running", "restarting")
    if desired == "stopped":
        if running and docker_id is not None:
            if not await store.set_status(container_id, desired, "stopping"):
                return
            await runtime.stop_container(docker_id, STOP_TIMEOUT_SECONDS)
        await store.set_status(container_id, desired, "stopped")
        log_event(logger, "container stopped", container_id=container_id)
        return

    # desired == "running"
    if docker_id is None:
        if not await store.set_status(container_id, desired, "creating"):
            return
        await runtime.ensure_network(CUSTOMER_NETWORK)
        docker_id = await runtime.create_container(_spec(context, row))
        running = False
    if docker_id != row["docker_id"]:
        await store.set_docker_id(container_id, docker_id)
    if running and restart:
        if not await store.set_status(container_id, desired, "stopping"):
            return
        await runtime.stop_container(docker_id, STOP_TIMEOUT_SECONDS)
        running = False
    if not running:
        if not await store.set_status(container_id, desired, "starting"):
            return
        await runtime.start_container(docker_id)
    await store.set_status(container_id, desired, "running")
    log_event(logger, "container running", container_id=container_id, docker_id=docker_id)


async def fail_container(context: ImageJobContext, payload: dict[str, Any], reason: str) -> None:
    if context.containers is not None:
        await context.containers.fail(str(payload.get("container_id") or ""), reason)
