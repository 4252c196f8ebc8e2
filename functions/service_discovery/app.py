"""The service-discovery function: namespaces, services and instances with health (/api/service-discovery)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from functions.service_discovery import service as discovery
from functions.service_discovery.deps import Registry
from functions.service_discovery.models import NamespaceList, Service, ServiceList
from shared.http_app import create_app, lambda_handler
from shared.identity import CurrentUser
from shared.registry import Namespace

router = APIRouter(prefix="/api/service-discovery", tags=["service-discovery"])
NamespaceQuery = Annotated[str, Query(max_length=63)]


@router.get("/namespaces", response_model=NamespaceList)
async def namespaces(user: CurrentUser, registry: Registry) -> NamespaceList:
    return await discovery.namespaces(registry, user)


@router.get("/services", response_model=ServiceList)
async def services(
    user: CurrentUser, registry: Registry, namespace: NamespaceQuery = Namespace.CLIENT_CONTAINERS.value
) -> ServiceList:
    return await discovery.services(registry, user, namespace)


@router.get("/services/{name}", response_model=Service)
async def service(
    name: str, user: CurrentUser, registry: Registry, namespace: NamespaceQuery = Namespace.CLIENT_CONTAINERS.value
) -> Service:
    return await discovery.service(registry, user, namespace, name)


app = create_app("service-discovery", [router])
handler = lambda_handler(app)
