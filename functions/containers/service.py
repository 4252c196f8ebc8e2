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
from shared.capacity import check_capacity, check_may_start, quota_lock
from shared.config import FunctionSettings, get_function_settings
from shared.container_placement import place_container
from shared.errors import BadRequest, Conflict, NotFound, ValidationFailed
from shared.host_store import HostStore
from shared.jobs import HostJobQueues, Job, JobKind
from shared.observability import get_logger
from shared.pagination import (
    decode_cursor,
    decode_sequence_cursor,
    encode_sequence_cursor,
    page_of,
    parse_id,
)
from shared.secrets import seal_env

STATES = ("pending", "creating", "starting", "running", "unhealthy", "stopping", "stopped", "deleted", "failed", "lost")

logger = get_logger("containers", get_function_settings().log_level)


def _container(row: dict[str, Any]) -> Container:
    return Container(
        id=str(row["id"]),
        name=row["name"],
        service=row["service"],
        release=row.get("release_number"),
        image_id=str(row["image_id"]),
        status=row["status"],
        desired_state=row["desired_state"],
        host_id=row["host_id"],
        region=row.get("region"),
        requested_region=row.get("requested_region"),
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
    await check_capacity(owner_id, plan, 1, body.memory_mb)
    image = await containers.image(owner_id, parse_id(body.image_id))
    if image is None:
        raise NotFound(f"No image {body.image_id}.")
    if image["status"] != "ready":
        raise Conflict(
            f"Image {image['name']}:{image['tag']} is {image['status']}; only a ready image can be deployed."
        )

    async def insert(container_id: uuid.UUID, host_id: str, ports: list[dict[str, Any]]) -> dict[str, Any] | None:
        # Checked again with the insert, under the owner's lock: concurrent creates cannot pass the quota.
        async with quota_lock(owner_id):
            await check_capacity(owner_id, plan, 1, body.memory_mb)
            return await _insert(container_id, host_id, ports)

    async def _insert(container_id: uuid.UUID, host_id: str, ports: list[dict[str, Any]]) -> dict[str, Any] | None:
        return await containers.create(
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
                "host_id": host_id,
                "region": body.region,
            },
        )

    if body.region is not None and body.region not in await hosts.regions():
        raise ValidationFailed(
            f"No host belongs to region {body.region!r}; leave region out or name a region of your hosts.",
            details=[{"loc": ["body", "region"], "msg": "unknown region"}],
        )
    ports = [port.model_dump() for port in body.ports]
    row = await place_container(hosts, queue, settings, ports, insert, region=body.region)
    if row is None:
        raise Conflict(f"You already have a container named {body.name}; pick another name or delete it first.")
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
    rows = await containers.page(
        owner_id, limit + 1, decode_cursor(cursor) if cursor is not None else None, service, state
    )
    items, next_cursor = page_of(rows, limit, _container)
    return ContainerPage(items=items, next_cursor=next_cursor)


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
    if desired == "running":
        await check_may_start(owner_id)  # a suspended account's containers stay stopped
    updated = await containers.set_desired(owner_id, str(row["id"]), desired, allowed_from)
    if updated is None:
        raise Conflict(f"Container {row['name']} is being deleted; it cannot {action}.")
    payload: dict[str, Any] = {"container_id": str(updated["id"])}
    if action == "restart":
        payload["restart"] = True
    # To the queue of the host the container is on now (a move to another host commits before this reads).
    await queue.send(updated["host_id"], Job(JobKind.RECONCILE_CONTAINER, payload))
    return _container(updated)


async def container_events(
    containers: ContainerStore, owner_id: str, container_id: str, limit: int, cursor: str | None
) -> ContainerEventPage:
    """The container's status and desired-state changes, newest first, a page at a time."""
    before = decode_sequence_cursor(cursor) if cursor is not None else None
    row = await _owned(containers, owner_id, container_id)
    rows = await containers.events(str(row["id"]), limit + 1, before)
    items, next_cursor = page_of(
        rows,
        limit,
        lambda event: ContainerEvent(**{**event, "id": str(event["id"])}),
        lambda last: encode_sequence_cursor(last["id"]),
    )
    return ContainerEventPage(items=items, next_cursor=next_cursor)


def _since(since: str | None) -> datetime | None:
    """A ``since`` query value as a time (RFC 3339 or unix seconds, as the document declares it); 422 otherwise."""
    try:
        return parse_since(since) if since is not None else None
    except ValueError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "since", "message": str(exc)}]) from exc


async def container_logs(
    containers: ContainerStore, owner_id: str, container_id: str, tail: int, since: str | None
) -> Logs:
    """The newest ``tail`` lines the host worker shipped (at or after ``since``), oldest first, whatever the
    container's status: logs outlive a stopped, failed, lost or deleted container."""
    after = _since(since)
    row = await _owned(containers, owner_id, container_id)
    return Logs(lines=[LogLine(**line) for line in await containers.logs(str(row["id"]), tail, after)])


async def container_stats(
    containers: ContainerStore, owner_id: str, container_id: str, since_text: str | None, limit: int
) -> ContainerStats:
    """The newest sample (None before the host worker took one) and up to ``limit`` samples, oldest first."""
    since = _since(since_text)
    row = await _owned(containers, owner_id, container_id)
    history = [StatsSample(**sample) for sample in await containers.stats(str(row["id"]), since, limit)]
    if since is None:
        # From the same read as the history (a second query could see a sample the history does not hold)
        latest: StatsSample | None = history[-1] if history else None
    else:
        found = await containers.latest_stats(str(row["id"]))
        latest = StatsSample(**found) if found is not None else None
    return ContainerStats(latest=latest, history=history)
