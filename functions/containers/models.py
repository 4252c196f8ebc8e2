"""The containers function's request and response bodies (the public contract)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A DNS label: what a container's name becomes in service discovery.
NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
REGION_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"
RESTART_POLICY_PATTERN = r"^(?:no|always|on-failure(?::[1-9][0-9]{0,2})?)$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# Command parts and variable values: any text but NUL, which neither a process argument nor PostgreSQL holds.
NO_NUL_PATTERN = r"^[^\x00]*$"
MAX_PORTS = 5
MAX_ENV_VALUE = 4096
# An HTTP health check's path: absolute, printable ASCII without spaces (it goes into a request line).
HEALTH_PATH_PATTERN = r"^/[\x21-\x7e]{0,1023}$"
UNIX_SECONDS_PATTERN = re.compile(r"[0-9]{1,11}(?:\.[0-9]{1,9})?")  # up to year 5138: datetime reaches 9999
# RFC 3339 section 5.6 date-time, case-insensitive T and Z as the RFC allows; ranges are checked after.
RFC3339_PATTERN = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# The longest ``since`` the routes read (a date-time with a long fraction fits).
MAX_SINCE_LENGTH = 64


def _check_env(env: dict[str, str], field: str) -> dict[str, str]:
    """Names and value sizes of an environment. Messages name variables, never their values."""
    bad = sorted(name for name in env if not re.fullmatch(ENV_NAME_PATTERN, name))
    if bad:
        raise ValueError(f"{field} variable names must be letters, digits and _: {', '.join(bad)}")
    too_long = sorted(name for name, value in env.items() if len(value) > MAX_ENV_VALUE)
    if too_long:
        raise ValueError(f"{field} values are at most {MAX_ENV_VALUE} characters: {', '.join(too_long)}")
    with_nul = sorted(name for name, value in env.items() if "\x00" in value)
    if with_nul:
        raise ValueError(f"{field} values may not hold NUL characters: {', '.join(with_nul)}")
    return env


def check_service_name(service: object) -> object:
    """A service name becomes ``<service>.internal`` on private networks: refuse what is not a DNS label, saying so."""
    if isinstance(service, str) and not re.match(NAME_PATTERN, service):
        raise ValueError(
            f"{service[:70]!r} is not a DNS label: use 1-63 lowercase letters, digits and hyphens, starting and "
            "ending with a letter or digit (it becomes <service>.internal)"
        )
    return service


# What the model checks in validators, stated for its JSON schema (compared with the document's).
_ENV_SCHEMA: dict[str, Any] = {
    "x-berth-property-names": {"pattern": ENV_NAME_PATTERN},
    "additionalProperties": {"type": "string", "maxLength": MAX_ENV_VALUE, "pattern": NO_NUL_PATTERN},
}
# The platform's ceiling of memory per container; the caller's plan (the ``plans`` table an admin edits) may
# allow less (403 quota_exceeded, shared.billing.quotas).
MAX_PLAN_MEMORY_MB = 65536


class PortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class HealthCheckRequest(BaseModel):
    """How the host worker decides the container is healthy; ``port`` and ``path`` may be left to defaults."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["http", "tcp"]
    port: int | None = Field(default=None, ge=1, le=65535, description="a container port; default: the first of ports")
    path: str | None = Field(
        default=None,
        max_length=1024,
        description='http only; default "/"',
        json_schema_extra={"pattern": HEALTH_PATH_PATTERN},  # checked by _absolute_path, for its message
    )
    interval_seconds: int = Field(default=10, ge=1, le=300)
    timeout_seconds: int = Field(default=2, ge=1, le=60)
    retries: int = Field(default=3, ge=1, le=10)
    start_period_seconds: int = Field(default=0, ge=0, le=600)

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str | None) -> str | None:
        if path is not None and not re.fullmatch(HEALTH_PATH_PATTERN, path):
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
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        json_schema_extra={"items": {"type": "string", "maxLength": 4096, "pattern": NO_NUL_PATTERN}},
    )
    # The names' pattern and the values' length are checked by _env_names (messages name no value);
    # OpenAPI 3.0 has no propertyNames, so the document carries it as x-berth-property-names.
    env: dict[str, str] = Field(default_factory=dict, max_length=100, json_schema_extra=_ENV_SCHEMA)
    # Sealed before it is stored; repr=False keeps the values out of any repr of the request.
    secret_env: dict[str, str] = Field(default_factory=dict, max_length=100, repr=False, json_schema_extra=_ENV_SCHEMA)
    ports: list[PortRequest] = Field(default_factory=list, max_length=MAX_PORTS)
    # strict=False: a JSON integer (1) is a valid CPU count too.
    cpu: float = Field(default=0.5, ge=0.1, le=2, strict=False)
    # At most the platform ceiling; the caller's own plan may allow less (403 quota_exceeded).
    memory_mb: int = Field(default=256, ge=16, le=MAX_PLAN_MEMORY_MB)
    restart_policy: str = Field(default="no", pattern=RESTART_POLICY_PATTERN)
    health_check: HealthCheckRequest | None = None
    # Run only on hosts of this region (and re-place only there when its host is lost); None: any region.
    region: str | None = Field(default=None, min_length=1, max_length=32, pattern=REGION_PATTERN)

    @field_validator("service", mode="before")
    @classmethod
    def _service_is_a_dns_label(cls, service: object) -> object:
        return check_service_name(service)

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
        if command is not None and any("\x00" in part for part in command):
            raise ValueError("command parts may not hold NUL characters")
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
    # The number of the service release this replica runs (None: a container created on its own).
    release: int | None = None
    image_id: str
    status: str
    desired_state: str
    host_id: str | None
    # The region of the host it runs on; requested_region: the one it was asked to run in (None: any).
    region: str | None = None
    requested_region: str | None = None
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
    """A ``since`` query value: an RFC 3339 date-time (what the document's ``format: date-time`` means) or
    unix seconds; ValueError otherwise. Exactly those: the document and this function refuse the same values."""
    if UNIX_SECONDS_PATTERN.fullmatch(value):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError("since is out of range") from exc
    found = RFC3339_PATTERN.fullmatch(value)
    if found is None:
        raise ValueError("since must be an RFC 3339 timestamp (2024-05-01T12:00:00Z) or unix seconds")
    year, month, day, hour, minute, second = (int(part) for part in found.group(1, 2, 3, 4, 5, 6))
    micros = int((found.group(7) or "")[1:7].ljust(6, "0"))
    zone = found.group(8).upper()
    if zone == "Z":
        offset = timedelta(0)
    else:
        offset_hours, offset_minutes = int(zone[1:3]), int(zone[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError("since has an impossible UTC offset")
        offset = (1 if zone[0] == "+" else -1) * timedelta(hours=offset_hours, minutes=offset_minutes)
    try:
        # A leap second (:60) is a valid RFC 3339 time; Python's datetime stops at :59.
        return datetime(year, month, day, hour, minute, min(second, 59), micros, timezone(offset))
    except ValueError as exc:
        raise ValueError("since is not a date and time that exists") from exc


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
