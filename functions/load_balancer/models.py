"""The load-balancer function's request and response bodies (the public contract)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SERVICE_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
PATH_PATTERN = re.compile(r"^/[\x21-\x7e]{0,1023}$")
MAX_WEIGHT = 1000
MAX_WEIGHTED_INSTANCES = 100

Protocol = Literal["http", "tcp"]
Algorithm = Literal["round_robin", "least_connections", "weighted"]


class ListenerHealthCheck(BaseModel):
    """How lb-runtime checks an instance before routing to it (active checks)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["http", "tcp"] = "http"
    path: str = "/"
    interval_seconds: int = Field(default=5, ge=1, le=300)
    timeout_seconds: int = Field(default=2, ge=1, le=60)
    healthy_threshold: int = Field(default=1, ge=1, le=10)
    unhealthy_threshold: int = Field(default=2, ge=1, le=10)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not PATH_PATTERN.match(path):
            raise ValueError("path must start with / and hold at most 1024 printable characters, no spaces")
        return path

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ListenerHealthCheck:
        if self.timeout_seconds > self.interval_seconds:
            raise ValueError("timeout_seconds must not be longer than interval_seconds")
        return self


def _check_weights(weights: dict[str, int] | None) -> dict[str, int] | None:
    if weights is None:
        return None
    if len(weights) > MAX_WEIGHTED_INSTANCES:
        raise ValueError(f"at most {MAX_WEIGHTED_INSTANCES} weights")
    for container_id, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise ValueError(f"the weight of {container_id} must be an integer")
        if weight < 0 or weight > MAX_WEIGHT:
            raise ValueError(f"the weight of {container_id} must be between 0 and {MAX_WEIGHT} (0 sends it nothing)")
    return weights


class CreateListener(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    service: str = Field(min_length=1, max_length=63, pattern=SERVICE_PATTERN)
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Protocol = "http"
    algorithm: Algorithm = "round_robin"
    weights: dict[str, int] | None = None
    health_check: ListenerHealthCheck | None = None

    _weights = field_validator("weights")(_check_weights)


class UpdateListener(BaseModel):
    """PATCH: only the fields given change; ``health_check: null`` removes the check."""

    model_config = ConfigDict(extra="forbid", strict=True)

    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Protocol | None = None
    algorithm: Algorithm | None = None
    weights: dict[str, int] | None = None
    health_check: ListenerHealthCheck | None = None

    _weights = field_validator("weights")(_check_weights)


class Listener(BaseModel):
    id: str
    service: str
    port: int
    address: str
    protocol: str
    algorithm: str
    weights: dict[str, int]
    health_check: ListenerHealthCheck | None
    created_at: datetime
    updated_at: datetime


class ListenerPage(BaseModel):
    items: list[Listener]
    next_cursor: str | None


class LatencyMs(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class InstanceStats(BaseModel):
    id: str
    address: str
    port: int
    status: str
    requests: int
    errors: int
    active_connections: int


class ListenerStats(BaseModel):
    listener_id: str
    rps: float
    latency_ms: LatencyMs
    requests: int
    errors: int
    active_connections: int
    instances: list[InstanceStats]
