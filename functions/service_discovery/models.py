"""The service-discovery function's response bodies (the public contract)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class NamespaceInfo(BaseModel):
    name: str
    description: str
    services: int


class NamespaceList(BaseModel):
    items: list[NamespaceInfo]
    next_cursor: str | None = None


class InstanceInfo(BaseModel):
    id: str
    address: str
    port: int
    status: str
    output: str
    updated_at: datetime | None
    region: str | None = None  # the region of the replica's host (its worker's BERTH_REGION)


class Service(BaseModel):
    name: str
    namespace: str
    # What the service's replicas are called on private networks: inside the owner's containers (the tenant
    # network's internal DNS) for client-containers, from the platform's hosts for internal-services.
    dns_name: str
    instances: list[InstanceInfo]


class ServiceList(BaseModel):
    items: list[Service]
    next_cursor: str | None = None
