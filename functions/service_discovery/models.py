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


class Service(BaseModel):
    name: str
    namespace: str
    instances: list[InstanceInfo]


class ServiceList(BaseModel):
    items: list[Service]
    next_cursor: str | None = None
