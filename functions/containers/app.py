"""The containers function: deploy containers from ready images and manage them (/api/containers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from functions.containers import service
from functions.containers.deps import Containers, Hosts, Queue, Settings
from functions.containers.models import (
    MAX_SINCE_LENGTH,
    NAME_PATTERN,
    Container,
    ContainerEventPage,
    ContainerPage,
    ContainerStats,
    CreateContainer,
    Logs,
)
from shared.http_app import create_app, lambda_handler
from shared.identity import CurrentUser

router = APIRouter(prefix="/api/containers", tags=["containers"])


@router.post("", status_code=202, response_model=Container)
async def create_container(
    body: CreateContainer, user: CurrentUser, containers: Containers, hosts: Hosts, queue: Queue, settings: Settings
) -> Container:
    return await service.create_container(containers, hosts, queue, settings, user.user_id, user.plan, body)


@router.get("", response_model=ContainerPage)
async def list_containers(
    user: CurrentUser,
    containers: Containers,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    service_name: Annotated[str | None, Query(alias="service", max_length=63, pattern=NAME_PATTERN)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
) -> ContainerPage:
    return await service.list_containers(containers, user.user_id, limit, cursor, service_name, state)


@router.get("/{container_id}", response_model=Container)
async def get_container(container_id: str, user: CurrentUser, containers: Containers) -> Container:
    return await service.get_container(containers, user.user_id, container_id)


@router.post("/{container_id}/start", status_code=202, response_model=Container)
async def start_container(container_id: str, user: CurrentUser, containers: Containers, queue: Queue) -> Container:
    return await service.change_state(containers, queue, user.user_id, container_id, "start")


@router.post("/{container_id}/stop", status_code=202, response_model=Container)
async def stop_container(container_id: str, user: CurrentUser, containers: Containers, queue: Queue) -> Container:
    return await service.change_state(containers, queue, user.user_id, container_id, "stop")


@router.post("/{container_id}/restart", status_code=202, response_model=Container)
async def restart_container(container_id: str, user: CurrentUser, containers: Containers, queue: Queue) -> Container:
    return await service.change_state(containers, queue, user.user_id, container_id, "restart")


@router.delete("/{container_id}", status_code=202, response_model=Container)
async def delete_container(container_id: str, user: CurrentUser, containers: Containers, queue: Queue) -> Container:
    return await service.change_state(containers, queue, user.user_id, container_id, "delete")


@router.get("/{container_id}/events", response_model=ContainerEventPage)
async def container_events(
    container_id: str,
    user: CurrentUser,
    containers: Containers,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ContainerEventPage:
    return await service.container_events(containers, user.user_id, container_id, limit, cursor)


@router.get("/{container_id}/logs", response_model=Logs)
async def container_logs(
    container_id: str,
    user: CurrentUser,
    containers: Containers,
    tail: Annotated[int, Query(ge=1, le=5000)] = 100,
    since: Annotated[str | None, Query(max_length=MAX_SINCE_LENGTH, description="RFC 3339 or unix seconds")] = None,
) -> Logs:
    return await service.container_logs(containers, user.user_id, container_id, tail, since)


@router.get("/{container_id}/stats", response_model=ContainerStats)
async def container_stats(
    container_id: str,
    user: CurrentUser,
    containers: Containers,
    since: Annotated[str | None, Query(max_length=MAX_SINCE_LENGTH, description="RFC 3339 or unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 120,
) -> ContainerStats:
    return await service.container_stats(containers, user.user_id, container_id, since, limit)


app = create_app("containers", [router])
handler = lambda_handler(app)
