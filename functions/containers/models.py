"""The containers function's request and response bodies (the public contract)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A DNS label: what a container's name becomes in service discovery.
NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
RESTART_POLICY_PATTERN = r"^(?:no|always|on-failure(?::[1-9][0-9]{0,2})?)$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_PORTS = 5
MAX_ENV_VALUE = 4096
# An HTTP health check's path: absolute, printable ASCII without spaces (it goes into a request line).
HEALTH_PATH_PATTERN = r"^/[\x21-\x7e]{0,1023}$"
UNIX_SECONDS_PATTERN = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,9})?$")


def _check_env(env: dict[str, str], field: str) -> dict[str, str]:
    """Names and value sizes of an environment. Messages name variables, never their values."""
    bad = sorted(name for name in env if not re.match(ENV_NAME_PATTERN, name))
    if bad:
        raise ValueError(f"{field} variable names must be letters, digits and _: {', '.join(bad)}")
    too_long = sorted(name for name, value in env.items() if len(value) > MAX_ENV_VALUE)
    if too_long:
        raise ValueError(f"{field} values are at most {MAX_ENV_VALUE} characters: {', '.join(too_long)}")
    return env


class PortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class HealthCheckRequest(BaseModel):
    """How the host worker decides the container is healthy; ``port`` and ``path`` may be left to defaults."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["http", "tcp"]
    port: int | None = Field(default=None, ge=1, le=65535, description="a container port; default: the first of ports")
    path: str | None = Field(default=None, max_length=1024, description='http only; default "/"')
    interval_seconds: int = Field(default=10, ge=1, le=300)
    timeout_seconds: int = Field(default=2, ge=1, le=60)
    retries: int = Field(default=3, ge=1, le=10)
    start_period_seconds: int = Field(default=0, ge=0, le=600)

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str | None) -> str | None:
        if path is not None and not re.match(HEALTH_PATH_PATTERN, path):
            raise ValueError('the path starts with "/" and is printable ASCII without spaces (percent-encode the rest)')
        return path

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "tcp" and self.path is not None:
            raise ValueError("a tcp health check has no path")
        if "timeout_seconds" not in self.model_fields_set:
            # The default timeout (2 s) yields to a shorter interval rather than refusing a field not sent.
            self.timeout_seconds = min(self.timeout_seconds, self.interval_seconds)
        if self.timeout_seconds > self.interval_seconds:
            raise ValueError("timeout_seconds must be at most interval_seconds")
        return self


class HealthCheck(BaseModel):
    """A health check as stored and answered: every default filled in (``path`` is None for tcp)."""

    type: Literal["http", "tcp"]
    port: int
    path: str | None
    interval_seconds: int
    timeout_seconds: int
    retries: int
    start_period_seconds: int


class CreateContainer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    image_id: str = Field(min_length=1, max_length=64)
    name: str = Field(
        min_length=1, max_length=63, pattern=NAME_PATTERN, description="a DNS label: a-z, 0-9 and inner dashes"
    )
    service: str | None = Field(default=None, min_length=1, max_length=63, pattern=NAME_PATTERN)
    command: list[str] | None = Field(default=None, min_length=1, max_length=64)
    env: dict[str, str] = Field(default_factory=dict, max_length=100)
    # Sealed before it is stored; repr=False keeps the values out of any repr of the request.
    secret_env: dict[str, str] = Field(default_factory=dict, max_length=100, repr=False)
    ports: list[PortRequest] = Field(default_factory=list, max_length=MAX_PORTS)
    # strict=False: a JSON integer (1) is a valid CPU count too.
    cpu: float = Field(default=0.5, ge=0.1, le=2, strict=False)
    memory_mb: int = Field(default=256, ge=16)
    restart_policy: str = Field(default="no", pattern=RESTART_POLICY_PATTERN)
    health_check: HealthCheckRequest | None = None

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return _check_env(env, "environment")

    @field_validator("secret_env")
    @classmethod
    def _secret_env_names(cls, secret_env: dict[str, str]) -> dict[str, str]:
        return _check_env(secret_env, "secret environment")

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

    @model_validator(mode="after")
    def _env_and_health_check(self) -> Self:
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"a variable is either in env or in secret_env, not both: {', '.join(both)}")
        if self.health_check is not None and self.health_check.port is None:
            if not self.ports:
                raise ValueError("health_check needs a port when the container publishes none")
            self.health_check.port = self.ports[0].container_port
        if self.health_check is not None and self.health_check.type == "http" and self.health_check.path is None:
            self.health_check.path = "/"
        return self

    def normalised_health_check(self) -> HealthCheck | None:
        """The health check with every default filled in (by the validator), as it is stored; None without one."""
        if self.health_check is None:
            return None
        return HealthCheck.model_validate(self.health_check.model_dump())


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
    secret_env_names: list[str] = []
    cpu: float
    memory_mb: int
    restart_policy: str
    health_check: HealthCheck | None = None
    restart_count: int = 0
    exit_code: int | None = None
    created_at: datetime
    updated_at: datetime


class ContainerPage(BaseModel):
    items: list[Container]
    next_cursor: str | None


class ContainerEvent(BaseModel):
    id: str
    ts: datetime
    status: str
    desired_state: str
    reason: str | None


class ContainerEventPage(BaseModel):
    items: list[ContainerEvent]
    next_cursor: str | None


def parse_since(value: str) -> datetime:
    """A ``since`` query value: an RFC 3339 timestamp (with its offset) or unix seconds; ValueError otherwise."""
    text = value.strip()
    if UNIX_SECONDS_PATTERN.match(text):
        seconds = float(text)
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError("since is out of range") from exc
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("since must be an RFC 3339 timestamp (2024-05-01T12:00:00Z) or unix seconds") from exc
    if parsed.tzinfo is None:
        raise ValueError("since needs a UTC offset (Z or +hh:mm), as in 2024-05-01T12:00:00Z")
    return parsed


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
