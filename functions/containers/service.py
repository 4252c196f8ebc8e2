"""Container logic: validation, scheduling, host ports, desired states, secrets, events and logs. No HTTP, no
boto3 here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from functions.containers.models import (
    Container,
    ContainerEvent,
    ContainerEventPage,
    ContainerPage,
    ContainerStats,
    CreateContainer,
    HealthCheck,
    LogLine,
    Logs,
    Port,
    StatsSample,
    parse_since,
)
from functions.containers.store import ContainerStore
from shared.config import FunctionSettings, get_function_settings
from shared.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, ValidationFailed
from shared.host_ports import allocate_port, release_ports
from shared.host_store import HostStore
from shared.jobs import HostJobQueues, Job
from shared.observability import get_logger
from shared.pagination import (
    decode_cursor,
    decode_sequence_cursor,
    encode_cursor,
    encode_sequence_cursor,
    parse_id,
)
from shared.secrets import seal_env

RECONCILE_CONTAINER = "container.reconcile"
PORT_OWNER_KIND = "container"

# The most memory one container of a plan may have; unknown plans get the free plan's.
PLAN_MEMORY_LIMIT_MB = {"free": 512, "pro": 4096, "team": 8192}
STATES = ("pending", "creating", "starting", "running", "unhealthy", "stopping", "stopped", "deleted", "failed", "lost")

logger = get_logger("containers", get_function_settings().log_level)


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
        secret_env_names=sorted(row["secret_env_names"] or []),
        cpu=float(row["cpu"]),
        memory_mb=row["memory_mb"],
        restart_policy=row["restart_policy"],
        health_check=HealthCheck.model_validate(row["health_check"]) if row["health_check"] else None,
        restart_count=row["restart_count"],
        exit_code=row["exit_code"],
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
    queue: HostJobQueues,
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
                "secret_env": seal_env(settings, body.secret_env),
                "secret_env_names": sorted(body.secret_env),
                "ports": ports,
                "cpu": body.cpu,
                "memory_mb": body.memory_mb,
                "restart_policy": body.restart_policy,
                "health_check": health_check.model_dump() if (health_check := body.normalised_health_check()) else None,
                "host_id": host["id"],
            },
        )
    except BaseException:
        await release_ports(hosts, PORT_OWNER_KIND, container_id)
        raise
    if row is None:
        await release_ports(hosts, PORT_OWNER_KIND, container_id)
        raise Conflict(f"You already have a container named {body.name}; pick another name or delete it first.")
    await queue.send(host["id"], Job(RECONCILE_CONTAINER, {"container_id": str(container_id)}))
    return _container(row)


async def get_container(containers: ContainerStore, owner_id: str, container_id: str) -> Container:
    return _container(await _owned(containers, owner_id, container_id))


async def list_containers(
    containers: ContainerStore,
    owner_id: str,
    limit: int,
    cursor: str | None,
    service: str | None,
    state: str | None,
) -> ContainerPage:
    if state is not None and state not in STATES:
        raise BadRequest(f"Unknown state {state!r}; one of {', '.join(STATES)}.")
    rows = await containers.page(owner_id, limit + 1, decode_cursor(cursor) if cursor else None, service, state)
    more = len(rows) > limit
    rows = rows[:limit]
    return ContainerPage(
        items=[_container(row) for row in rows],
        next_cursor=encode_cursor(rows[-1]) if more and rows else None,
    )


# action -> (desired state, desired states it may come from)
_ACTIONS = {
    "start": ("running", ("running", "stopped")),
    "stop": ("stopped", ("running", "stopped")),
    "restart": ("running", ("running", "stopped")),
    "delete": ("deleted", ("running", "stopped", "deleted")),
}


async def change_state(
    containers: ContainerStore,
    queue: HostJobQueues,
    owner_id: str,
    container_id: str,
    action: str,
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
    # To the queue of the host the container is on now (a move to another host commits before this reads).
    await queue.send(updated["host_id"], Job(RECONCILE_CONTAINER, payload))
    return _container(updated)


async def container_events(
    containers: ContainerStore, owner_id: str, container_id: str, limit: int, cursor: str | None
) -> ContainerEventPage:
    """The container's status and desired-state changes, newest first, a page at a time."""
    before = decode_sequence_cursor("event", cursor) if cursor else None
    row = await _owned(containers, owner_id, container_id)
    rows = await containers.events(str(row["id"]), limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return ContainerEventPage(
        items=[ContainerEvent(**{**event, "id": str(event["id"])}) for event in rows],
        next_cursor=encode_sequence_cursor("event", rows[-1]["id"]) if more and rows else None,
    )


async def container_logs(
    containers: ContainerStore, owner_id: str, container_id: str, tail: int, since: str | None
) -> Logs:
    """The newest ``tail`` lines the host worker shipped (at or after ``since``), oldest first, whatever the
    container's status: logs outlive a stopped, failed, lost or deleted container."""
    try:
        after = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "since", "message": str(exc)}]) from exc
    row = await _owned(containers, owner_id, container_id)
    return Logs(lines=[LogLine(**line) for line in await containers.logs(str(row["id"]), tail, after)])


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
