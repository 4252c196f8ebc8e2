"""The services function: declared replicas, releases, rolling deploys and rollbacks (/api/services)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError

from functions.containers.models import NAME_PATTERN
from functions.services import service
from functions.services.deps import Queue, Services, Settings
from functions.services.models import (
    CreateService,
    DeleteService,
    DeployService,
    Release,
    ReleasePage,
    RollbackService,
    Service,
    ServicePage,
    UpdateService,
)
from shared.http_app import create_app, lambda_handler
from shared.identity import CurrentUser

router = APIRouter(prefix="/api/services", tags=["services"])
Name = Annotated[str, Path(max_length=63, pattern=NAME_PATTERN)]


@router.post("", status_code=202, response_model=Service)
async def create_service(body: CreateService, user: CurrentUser, services: Services, settings: Settings) -> Service:
    return await service.create_service(services, settings, user.user_id, user.plan, body)


@router.get("", response_model=ServicePage)
async def list_services(
    user: CurrentUser,
    services: Services,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ServicePage:
    return await service.list_services(services, user.user_id, limit, cursor)


@router.get("/{name}", response_model=Service)
async def get_service(name: Name, user: CurrentUser, services: Services) -> Service:
    return await service.get_service(services, user.user_id, name)


@router.patch("/{name}", response_model=Service)
async def update_service(name: Name, body: UpdateService, user: CurrentUser, services: Services) -> Service:
    return await service.update_service(services, user.user_id, user.plan, name, body)


@router.delete("/{name}", status_code=202, response_model=Service)
async def delete_service(
    name: Name, body: DeleteService, user: CurrentUser, services: Services, queue: Queue
) -> Service:
    return await service.delete_service(services, queue, user.user_id, name, body)


@router.post("/{name}/deploy", status_code=202, response_model=Release)
async def deploy_service(
    name: Name, body: DeployService, user: CurrentUser, services: Services, settings: Settings
) -> Release:
    return await service.deploy_service(services, settings, user.user_id, user.plan, name, body)


@router.post("/{name}/rollback", status_code=202, response_model=Release)
async def rollback_service(
    name: Name, user: CurrentUser, services: Services, request: Request, body: RollbackService | None = None
) -> Release:
    # The body may be left out (roll back to the release before the current one), but a body that is there
    # must be the documented object: a JSON `null` is as wrong as a string or a list.
    if body is None and (await request.body()).strip():
        raise RequestValidationError(
            [{"type": "model_type", "loc": ("body",), "msg": "Input should be an object, or send no body"}]
        )
    return await service.rollback_service(services, user.user_id, name, body or RollbackService())


@router.get("/{name}/releases", response_model=ReleasePage)
async def list_releases(
    name: Name,
    user: CurrentUser,
    services: Services,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ReleasePage:
    return await service.list_releases(services, user.user_id, name, limit, cursor)


app = create_app("services", [router])
handler = lambda_handler(app)
