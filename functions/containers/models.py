"""The containers function's request and response bodies (the public contract)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A DNS label: what a container's name becomes in service discovery.
NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
RESTART_POLICY_PATTERN = r"^(?:no|always|on-failure(?::[1-9][0-9]{0,2})?)$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_PORTS = 5


class PortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class CreateContainer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    image_id: str = Field(min_length=1, max_length=64)
    name: str = Field(
        min_length=1, max_length=63, pattern=NAME_PATTERN, description="a DNS label: a-z, 0-9 and inner dashes"
    )
    service: str | None = Field(default=None, min_length=1, max_length=63, pattern=NAME_PATTERN)
    command: list[str] | None = Field(default=None, min_length=1, max_length=64)
    env: dict[str, str] = Field(default_factory=dict, max_length=100)
    ports: list[PortRequest] = Field(default_factory=list, max_length=MAX_PORTS)
    # strict=False: a JSON integer (1) is a valid CPU count too.
    cpu: float = Field(default=0.5, ge=0.1, le=2, strict=False)
    memory_mb: int = Field(default=256, ge=16)
    restart_policy: str = Field(default="no", pattern=RESTART_POLICY_PATTERN)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        bad = sorted(name for name in env if not re.match(ENV_NAME_PATTERN, name))
        if bad:
            raise ValueError(f"environment variable names must be letters, digits and _: {', '.join(bad)}")
        if any(len(value) > 4096 for value in env.values()):
            raise ValueError("environment values are at most 4096 characters")
        return env

    @field_validator("ports")
    @classmethod
    def _distinct_ports(cls, ports: list[PortRequest]) -> list[PortRequest]:
        seen = [port.container_port for port in ports]
        if len(seen) != len(set(seen)):
            raise ValueError("each container port may be published once")
        return ports

    @field_validator("command")
    @classmethod
    def _command_parts(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and any(len(part) > 4096 for part in command):
            raise ValueError("command parts are at most 4096 characters")
        return command


class Port(BaseModel):
    container_port: int
    protocol: str = "tcp"
    host_ip: str | None = None
    host_port: int | None = None


class Container(BaseModel):
    id: str
    name: str
    service: str | None
    image_id: str
    status: str
    desired_state: str
    host_id: str | None
    ports: list[Port]
    reason: str | None = None
    command: list[str] | None = None
    env_names: list[str] = []
    cpu: float
    memory_mb: int
    restart_policy: str
    created_at: datetime
    updated_at: datetime


class ContainerPage(BaseModel):
    items: list[Container]
    next_cursor: str | None


class LogLine(BaseModel):
    ts: datetime
    stream: str
    text: str


class Logs(BaseModel):
    lines: list[LogLine]


class StatsSample(BaseModel):
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    fs_bytes: int | None
    ts: datetime


class ContainerStats(BaseModel):
    latest: StatsSample | None
    history: list[StatsSample]
