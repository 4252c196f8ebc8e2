"""The services function's request and response bodies (the public contract of /api/services)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from functions.containers.models import (
    _ENV_SCHEMA,
    MAX_PLAN_MEMORY_MB,
    MAX_PORTS,
    NAME_PATTERN,
    NO_NUL_PATTERN,
    REGION_PATTERN,
    RESTART_POLICY_PATTERN,
    HealthCheck,
    HealthCheckRequest,
    PortRequest,
    _check_env,
    check_service_name,
)
from shared.capacity import MAX_PLAN_REPLICAS

RELEASE_STATUSES = ("pending", "rolling", "healthy", "failed", "rolled_back", "superseded")
MAX_WAIT_SECONDS = 3600
MAX_SERVICE_REGIONS = 16
_COMMAND_SCHEMA: dict[str, Any] = {"items": {"type": "string", "maxLength": 4096, "pattern": NO_NUL_PATTERN}}


class UpdatePolicy(BaseModel):
    """How a deploy replaces replicas: at most ``max_surge`` above and ``max_unavailable`` below ``replicas``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_surge: int = Field(default=1, ge=0, le=MAX_PLAN_REPLICAS)
    max_unavailable: int = Field(default=0, ge=0, le=MAX_PLAN_REPLICAS)
    min_healthy_seconds: int = Field(default=5, ge=0, le=MAX_WAIT_SECONDS)
    healthy_deadline_seconds: int = Field(default=300, ge=1, le=MAX_WAIT_SECONDS)
    auto_rollback: bool = True

    @model_validator(mode="after")
    def _can_progress(self) -> Self:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0: a rollout could never replace a replica")
        if self.min_healthy_seconds >= self.healthy_deadline_seconds:
            raise ValueError("min_healthy_seconds must be less than healthy_deadline_seconds")
        return self


class ServiceRegion(BaseModel):
    """A region the service runs in, and how many of its replicas run there at least (each placed only on that
    region's hosts and re-placed only there when its host is lost)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=32, pattern=REGION_PATTERN)
    min: int = Field(ge=1, le=MAX_PLAN_REPLICAS)


def _distinct_regions(regions: list[ServiceRegion] | None) -> list[ServiceRegion] | None:
    if regions is not None:
        names = [region.name for region in regions]
        if len(names) != len(set(names)):
            raise ValueError("regions names a region twice")
    return regions


def _normalise_health_check(health_check: HealthCheckRequest | None, ports: list[PortRequest]) -> None:
    """Fill in the check's port (the first published one) and path, as containers do; ValueError without a port."""
    if health_check is None:
        return
    if health_check.port is None:
        if not ports:
            raise ValueError("health_check needs a port when the service publishes none")
        health_check.port = ports[0].container_port
    if health_check.type == "http" and health_check.path is None:
        health_check.path = "/"


def _distinct_ports(ports: list[PortRequest] | None) -> list[PortRequest] | None:
    if ports is not None:
        seen = [port.container_port for port in ports]
        if len(seen) != len(set(seen)):
            raise ValueError("each container port may be published once")
    return ports


def _command_parts(command: list[str] | None) -> list[str] | None:
    if command is not None and any(len(part) > 4096 for part in command):
        raise ValueError("command parts are at most 4096 characters")
    if command is not None and any("\x00" in part for part in command):
        raise ValueError("command parts may not hold NUL characters")
    return command


class CreateService(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=NAME_PATTERN,
        description="a DNS label: it becomes <name>.internal and the service listeners name",
    )
    image_id: str = Field(min_length=1, max_length=64)
    replicas: int = Field(ge=0, le=MAX_PLAN_REPLICAS, description="at most your plan's limit")
    command: list[str] | None = Field(default=None, min_length=1, max_length=64, json_schema_extra=_COMMAND_SCHEMA)
    env: dict[str, str] = Field(default_factory=dict, max_length=100, json_schema_extra=_ENV_SCHEMA)
    secret_env: dict[str, str] = Field(default_factory=dict, max_length=100, repr=False, json_schema_extra=_ENV_SCHEMA)
    ports: list[PortRequest] = Field(default_factory=list, max_length=MAX_PORTS)
    cpu: float = Field(default=0.5, ge=0.1, le=2, strict=False)
    memory_mb: int = Field(default=256, ge=16, le=MAX_PLAN_MEMORY_MB)
    restart_policy: str = Field(default="always", pattern=RESTART_POLICY_PATTERN)
    health_check: HealthCheckRequest | None = None
    update_policy: UpdatePolicy = Field(default_factory=UpdatePolicy)
    # At least ``min`` replicas in each region (their sum at most ``replicas``); the rest go to any region.
    regions: list[ServiceRegion] = Field(default_factory=list, max_length=MAX_SERVICE_REGIONS)

    _service_name = field_validator("name", mode="before")(check_service_name)
    _ports = field_validator("ports")(_distinct_ports)
    _command = field_validator("command")(_command_parts)
    _regions = field_validator("regions")(_distinct_regions)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return _check_env(env, "environment")

    @field_validator("secret_env")
    @classmethod
    def _secret_env_names(cls, secret_env: dict[str, str]) -> dict[str, str]:
        return _check_env(secret_env, "secret environment")

    @model_validator(mode="after")
    def _env_and_health_check(self) -> Self:
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"a variable is either in env or in secret_env, not both: {', '.join(both)}")
        _normalise_health_check(self.health_check, self.ports)
        return self


class DeployService(BaseModel):
    """A change: each field given replaces the current release's; ``health_check: null`` removes the check.
    ``secret_env`` given replaces the whole secret environment."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image_id: str | None = Field(default=None, min_length=1, max_length=64)
    command: list[str] | None = Field(default=None, min_length=1, max_length=64, json_schema_extra=_COMMAND_SCHEMA)
    env: dict[str, str] | None = Field(default=None, max_length=100, json_schema_extra=_ENV_SCHEMA)
    secret_env: dict[str, str] | None = Field(default=None, max_length=100, repr=False, json_schema_extra=_ENV_SCHEMA)
    ports: list[PortRequest] | None = Field(default=None, max_length=MAX_PORTS)
    cpu: float | None = Field(default=None, ge=0.1, le=2, strict=False)
    memory_mb: int | None = Field(default=None, ge=16, le=MAX_PLAN_MEMORY_MB)
    restart_policy: str | None = Field(default=None, pattern=RESTART_POLICY_PATTERN)
    health_check: HealthCheckRequest | None = None
    # The new release's regional minimums; null (or []) removes them.
    regions: list[ServiceRegion] | None = Field(default=None, max_length=MAX_SERVICE_REGIONS)

    _ports = field_validator("ports")(_distinct_ports)
    _command = field_validator("command")(_command_parts)
    _regions = field_validator("regions")(_distinct_regions)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str] | None) -> dict[str, str] | None:
        return None if env is None else _check_env(env, "environment")

    @field_validator("secret_env")
    @classmethod
    def _secret_env_names(cls, secret_env: dict[str, str] | None) -> dict[str, str] | None:
        return None if secret_env is None else _check_env(secret_env, "secret environment")


class UpdateService(BaseModel):
    """PATCH: only the fields given change."""

    model_config = ConfigDict(extra="forbid", strict=True)

    replicas: int | None = Field(default=None, ge=0, le=MAX_PLAN_REPLICAS)
    update_policy: UpdatePolicy | None = None


class DeleteService(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    confirm: str = Field(min_length=1, max_length=63, description="the service's name, to confirm")


class RollbackService(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    release: int | None = Field(default=None, ge=1, description="default: the previous healthy release")


class ServicePort(BaseModel):
    container_port: int
    protocol: str = "tcp"


class ReleaseReplicas(BaseModel):
    release: int
    running: int  # passing their health check
    total: int  # not deleted, whatever their status


class RegionReplicas(BaseModel):
    region: str | None  # the region of the replicas' host (None: not placed)
    running: int
    total: int


class Service(BaseModel):
    id: str
    name: str
    dns_name: str
    replicas: int
    running_replicas: int
    replicas_by_release: list[ReleaseReplicas]
    release: int
    release_status: str
    image_id: str
    command: list[str] | None
    env_names: list[str]
    secret_env_names: list[str]
    ports: list[ServicePort]
    cpu: float
    memory_mb: int
    restart_policy: str
    health_check: HealthCheck | None
    update_policy: UpdatePolicy
    regions: list[ServiceRegion] = []
    replicas_by_region: list[RegionReplicas] = []
    created_at: datetime
    updated_at: datetime


class ServicePage(BaseModel):
    items: list[Service]
    next_cursor: str | None


class Release(BaseModel):
    id: str
    number: int
    image_id: str
    config_digest: str
    status: Literal["pending", "rolling", "healthy", "failed", "rolled_back", "superseded"]
    reason: str | None
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None


class ReleasePage(BaseModel):
    items: list[Release]
    next_cursor: str | None
