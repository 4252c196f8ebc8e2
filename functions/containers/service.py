"""Container logic: validation, scheduling, host ports, desired states and logs. No HTTP, no boto3 here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from functions.containers.models import (
    Container,
    ContainerPage,
    ContainerStats,
    CreateContainer,
    LogLine,
    Logs,
    Port,
    StatsSample,
)
from functions.containers.store import ContainerStore
from shared.config import FunctionSettings
from shared.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, ValidationFailed
from shared.host_ports import allocate_port, release_ports
from shared.host_store import HostStore
from shared.jobs import Job, JobQueue
from shared.pagination import decode_cursor, encode_cursor, parse_id

RECONCILE_CONTAINER = "container.reconcile"
PORT_OWNER_KIND = "container"

# The most memory one container of a plan may have; unknown plans get the free plan's.
PLAN_MEMORY_LIMIT_MB = {"free": 512, "pro": 4096, "team": 8192}
STATES = ("pending", "creating", "starting", "running", "unhealthy", "stopping", "stopped", "deleted", "failed", "lost")


class LogReader(Protocol):
    async def container_logs(
        self, container_id: str, tail: int | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]: ...


def _container(row: dict[str, Any]) -> Container:
    return Container(
        id=str(row["id"]),
        name=row["name"],
        service=row["service"],
        image_id=str(row["image_id"]),
        status=row["status"],
        desired_state=row["desired_state"],
        host_id=row["host_id"],
        ports=[Port(**port) for port in row["ports"] or []],
        reason=row["reason"],
        command=row["command"],
        env_names=sorted(row["env"] or {}),
        cpu=float(row["cpu"]),
        memory_mb=row["memory_mb"],
        restart_policy=row["restart_policy"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _owned(containers: ContainerStore, owner_id: str, container_id: str) -> dict[str, Any]:
    row = await containers.get(owner_id, parse_id(container_id))
    if row is None:
        raise NotFound(f"No container {container_id}.")
    return row


async def create_container(
    containers: ContainerStore,
    hosts: HostStore,
    queue: JobQueue,
    settings: FunctionSettings,
    owner_id: str,
    plan: str,
    body: CreateContainer,
) -> Container:
    limit = PLAN_MEMORY_LIMIT_MB.get(plan, PLAN_MEMORY_LIMIT_MB["free"])
    if body.memory_mb > limit:
        raise ValidationFailed(
            f"memory_mb {body.memory_mb} is above your {plan} plan's limit of {limit} MB per container.",
            details=[{"loc": ["body", "memory_mb"], "msg": f"at most {limit}"}],
        )
    image = await containers.image(owner_id, parse_id(body.image_id))
    if image is None:
        raise NotFound(f"No image {body.image_id}.")
    if image["status"] != "ready":
        raise Conflict(
            f"Image {image['name']}:{image['tag']} is {image['status']}; only a ready image can be deployed."
        )
    host = await hosts.least_busy_host(settings.host_down_after_seconds)
    if host is None:
        raise ServiceUnavailable("No container host is available right now; try again in a minute.")
    container_id = uuid.uuid4()
    ports: list[dict[str, Any]] = []
    try:
        for port in body.ports:
            host_port = await allocate_port(hosts, host["id"], PORT_OWNER_KIND, container_id, settings.host_port_range)
            ports.append(
                {
                    "container_port": port.container_port,
                    "protocol": port.protocol,
                    "host_ip": host["address"],
                    "host_port": host_port,
                }
            )
        row = await containers.create(
            str(container_id),
            owner_id,
            {
                "image_id": str(image["id"]),
                "name": body.name,
                "service": body.service,
                "command": body.command,
                "env": body.env,
                "ports": ports,
                "cpu": body.cpu,
                "memory_mb": body.memory_mb,
                "restart_policy": body.restart_policy,
                "host_id": host["id"],
            },
        )
    except BaseException:
        await release_ports(hosts, PORT_OWNER_KIND, container_id)
        raise
    if row is None:
        await release_ports(hosts, PORT_OWNER_KIND, container_id)
        raise Conflict(f"You already have a container named {body.name}; pick another name or delete it first.")
    await queue.send(Job(RECONCILE_CONTAINER, {"container_id": str(container_id)}))
    return _container(row)


async def get_container(containers: ContainerStore, owner_id: str, container_id: str) -> Container:
    return _container(await _owned(containers, owner_id, container_id))


async def list_containers(
    containers: ContainerStore, owner_id: str, limit: int, cursor: str | None, service: str | None, state: str | None
) -> ContainerPage:
    if state is not None and state not in STATES:
        raise BadRequest(f"Unknown state {state!r}; one of {', '.join(STATES)}.")
    rows = await containers.page(owner_id, limit + 1, decode_cursor(cursor) if cursor else None, service, state)
    more = len(rows) > limit
    rows = rows[:limit]
    return ContainerPage(
        items=[_container(row) for row in rows], next_cursor=encode_cursor(rows[-1]) if more and rows else None
    )


# action -> (desired state, desired states it may come from)
_ACTIONS = {
    "start": ("running", ("running", "stopped")),
    "stop": ("stopped", ("running", "stopped")),
    "restart": ("running", ("running", "stopped")),
    "delete": ("deleted", ("running", "stopped", "deleted")),
}


async def change_state(
    containers: ContainerStore, queue: JobQueue, owner_id: str, container_id: str, action: str
) -> Container:
    """Record what the tenant wants and queue the host worker to converge on it."""
    desired, allowed_from = _ACTIONS[action]
    row = await _owned(containers, owner_id, container_id)
    updated = await containers.set_desired(owner_id, str(row["id"]), desired, allowed_from)
    if updated is None:
        raise Conflict(f"Container {row['name']} is being deleted; it cannot {action}.")
    payload: dict[str, Any] = {"container_id": str(updated["id"])}
    if action == "restart":
        payload["restart"] = True
    await queue.send(Job(RECONCILE_CONTAINER, payload))
    return _container(updated)


async def container_logs(
    containers: ContainerStore,
    logs: LogReader,
    owner_id: str,
    container_id: str,
    tail: int | None,
    since: datetime | None,
) -> Logs:
    row = await _owned(containers, owner_id, container_id)
    if not row["docker_id"] or row["status"] == "deleted":
        raise Conflict(f"Logs of {row['name']} are available once the container has run (it is {row['status']}).")
    lines = await logs.container_logs(row["docker_id"], tail=tail, since=since)
    return Logs(lines=[LogLine(**line) for line in lines])


async def container_stats(
    containers: ContainerStore, owner_id: str, container_id: str, since: datetime | None, limit: int
) -> ContainerStats:
    """The newest sample (None before the host worker took one) and up to ``limit`` samples, oldest first."""
    row = await _owned(containers, owner_id, container_id)
    history = [StatsSample(**sample) for sample in await containers.stats(str(row["id"]), since, limit)]
    if history and since is None:
        latest: StatsSample | None = history[-1]
    else:
        found = await containers.latest_stats(str(row["id"]))
        latest = StatsSample(**found) if found is not None else None
    return ContainerStats(latest=latest, history=history)
