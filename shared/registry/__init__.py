"""The service registry port: where running instances (the platform's own services and customers' containers)
are registered with their health, and where discovery and the load balancer read and watch them.

Two adapters implement it: PostgreSQL (``shared.registry.postgres``, the local default) and Consul
(``shared.registry.consul``, production). ``get_registry`` picks one from ``RegistrySettings``. Both keep the
same meaning, checked by one contract suite (tests/integration/test_registry_contract.py):

- an instance is keyed by (namespace, id); ``register`` is an upsert;
- health is what the host worker reports (it runs the HTTP/TCP probes itself, or a service passes its own
  TTL); an instance with a check that is not reported within the check's report TTL reads as critical;
- every change moves a per-service index forward, and ``watch`` blocks until it moves past a given index;
- ``expire`` removes instances that stopped being healthy (what Consul's DeregisterCriticalServiceAfter does).
"""

from __future__ import annotations

import re
import urllib.parse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")  # a DNS label, as Consul wants
INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ADDRESS = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")  # a host name, an IPv4 or an IPv6 address
META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # Consul's rule for service meta keys
# Prefixes the adapters keep for themselves (Consul tags and meta keys that carry namespace and owner).
RESERVED_TAG_PREFIX = "berth:"
RESERVED_META_PREFIXES = ("berth_", "consul")
MAX_OUTPUT_CHARS = 4096


class Namespace(StrEnum):
    INTERNAL_SERVICES = "internal-services"  # the platform's own: workers, lb-runtime (admins only)
    CLIENT_CONTAINERS = "client-containers"  # customers' containers, each with its owner


class HealthStatus(StrEnum):
    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


class CheckType(StrEnum):
    HTTP = "http"
    TCP = "tcp"
    TTL = "ttl"


class HealthCheck(BaseModel):
    """How an instance's health is established: probed by its host worker (http, tcp) or passed by the
    instance itself (ttl). Either way the result reaches the registry through ``report_health``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: CheckType
    path: str | None = Field(default=None, max_length=512)  # Consul keeps it in a 512-character meta value
    interval_seconds: float = Field(default=10.0, ge=0.5, le=3600)
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # Critical for longer than this and the instance is removed (Consul's DeregisterCriticalServiceAfter;
    # Consul's own reaper works to about a minute, `expire` to the second).
    deregister_after_seconds: float = Field(default=60.0, ge=1, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _check_fields(self) -> HealthCheck:
        if self.type is CheckType.HTTP:
            if not self.path or not self.path.startswith("/"):
                raise ValueError("an http check needs a path starting with /")
        elif self.path is not None:
            raise ValueError(f"a {self.type} check takes no path")
        if self.type is not CheckType.TTL and self.timeout_seconds > self.interval_seconds:
            raise ValueError("a check's timeout must not exceed its interval")
        return self

    @property
    def report_ttl_seconds(self) -> float:
        """Without a report for this long the instance reads as critical: a ttl check's interval is its TTL;
        a probed check may miss two rounds (the worker may be busy) before the third lapses it."""
        if self.type is CheckType.TTL:
            return self.interval_seconds
        return 3 * self.interval_seconds + self.timeout_seconds


class Instance(BaseModel):
    """One running instance of a service, as registered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    namespace: Namespace
    service: str
    owner_id: UUID | None = None
    address: str
    port: int = Field(ge=1, le=65535)
    # Unset: critical until the first report when there is a check (no traffic before the first probe
    # passes, as Consul does), passing otherwise.
    status: HealthStatus = HealthStatus.PASSING
    output: str = Field(default="", max_length=MAX_OUTPUT_CHARS)
    tags: tuple[str, ...] = Field(default=(), max_length=64)
    meta: dict[str, str] = Field(default_factory=dict, max_length=48)  # Consul allows 64, with the adapter's
    check: HealthCheck | None = None
    # Set by the registry: when the registration or the health status last changed.
    updated_at: datetime | None = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not INSTANCE_ID.match(value):
            raise ValueError("an instance id is 1-128 letters, digits, '_', '.' or '-', starting alphanumeric")
        return value

    @field_validator("service")
    @classmethod
    def _valid_service(cls, value: str) -> str:
        if not SERVICE_NAME.match(value):
            raise ValueError("a service name is a DNS label: 1-63 lowercase letters, digits or '-'")
        return value

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        if not ADDRESS.match(value):
            raise ValueError("an address is a host name or an IP address")
        return value

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not 1 <= len(tag) <= 255 or not tag.isprintable():
                raise ValueError("a tag is 1-255 printable characters")
            if tag.startswith(RESERVED_TAG_PREFIX):
                raise ValueError(f"tags starting with {RESERVED_TAG_PREFIX!r} are reserved")
        return value

    @field_validator("meta")
    @classmethod
    def _valid_meta(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not META_KEY.match(key):
                raise ValueError("a meta key is 1-128 letters, digits, '_' or '-'")
            if key.lower().startswith(RESERVED_META_PREFIXES):
                raise ValueError(f"meta keys starting with {' or '.join(RESERVED_META_PREFIXES)} are reserved")
            if len(item) > 512:
                raise ValueError("a meta value is at most 512 characters")
        return value

    @model_validator(mode="before")
    @classmethod
    def _resolve_status(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("status") is None:
            data = {**data, "status": HealthStatus.CRITICAL if data.get("check") else HealthStatus.PASSING}
        return data

    @model_validator(mode="after")
    def _check_tenancy(self) -> Instance:
        if self.namespace is Namespace.CLIENT_CONTAINERS and self.owner_id is None:
            raise ValueError("a client container always names its owner")
        if self.namespace is Namespace.INTERNAL_SERVICES and self.owner_id is not None:
            raise ValueError("an internal service has no owner")
        return self


class ServiceSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    instances: int
    passing: int


@dataclass(frozen=True)
class WatchResult:
    """Where a watch ended: the index to pass to the next watch, and whether it moved past the one given."""

    index: int
    changed: bool


def parse_address(address: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``http://127.0.0.1:8500``, ``https://consul:8501`` or ``127.0.0.1:8500``."""
    parsed = urllib.parse.urlparse(address if "//" in address else "//" + address)
    scheme = parsed.scheme or "http"
    if scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"not a Consul HTTP address: {address!r}")
    return scheme, parsed.hostname, parsed.port or (8501 if scheme == "https" else 8500)


def clip_output(output: str) -> str:
    """A check's output as stored: long probe bodies are cut, not refused."""
    return output[:MAX_OUTPUT_CHARS]


class ServiceRegistry(ABC):
    """Where instances are registered, their health reported, and from where they are discovered."""

    @abstractmethod
    async def register(self, instance: Instance) -> Instance:
        """Create or replace the instance (namespace, id); returns it as stored."""

    @abstractmethod
    async def deregister(self, namespace: Namespace, instance_id: str) -> bool:
        """Remove the instance; False when there was none."""

    @abstractmethod
    async def report_health(
        self, namespace: Namespace, instance_id: str, status: HealthStatus, output: str = ""
    ) -> None:
        """Record a check result (or a TTL pass); raises NotFound for an unknown instance."""

    @abstractmethod
    async def services(self, namespace: Namespace, owner_id: UUID | None = None) -> list[ServiceSummary]:
        """The namespace's services with instance and passing counts, only ``owner_id``'s when given."""

    @abstractmethod
    async def instances(
        self, namespace: Namespace, service: str, owner_id: UUID | None = None, passing_only: bool = False
    ) -> list[Instance]:
        """A service's instances ordered by id, only ``owner_id``'s and only passing ones when asked."""

    @abstractmethod
    async def watch(
        self, namespace: Namespace, service: str | None = None, index: int = 0, wait_seconds: float = 60.0
    ) -> WatchResult:
        """Wait until the namespace (or one service in it) changes past ``index``, or ``wait_seconds`` pass;
        index 0 answers at once with the current index."""

    @abstractmethod
    async def current_index(self, namespace: Namespace, service: str | None = None) -> int:
        """The namespace's (or one service's) change index now, without waiting: what ``watch`` waits past."""

    @abstractmethod
    async def expire(self, ttl_seconds: float) -> list[Instance]:
        """Remove instances not healthy for ``ttl_seconds`` or critical past their deregister-after."""

    async def close(self) -> None:
        """Release connections held by the adapter."""
        return None


class RegistryBackend(StrEnum):
    POSTGRES = "postgres"
    CONSUL = "consul"


class RegistrySettings(BaseSettings):
    """Which registry a process uses and how to reach it (BERTH_REGISTRY, BERTH_CONSUL_*)."""

    model_config = SettingsConfigDict(env_prefix="BERTH_", extra="ignore", frozen=True)

    registry: RegistryBackend = RegistryBackend.POSTGRES
    # The same variable as CoreSettings.database_url; only the postgres backend reads it.
    database_url: str = "postgresql://berth:berth@127.0.0.1:5432/berth"
    consul_http_addr: str = Field(
        default="http://127.0.0.1:8500",
        validation_alias=AliasChoices("BERTH_CONSUL_HTTP_ADDR", "CONSUL_HTTP_ADDR"),
    )
    consul_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BERTH_CONSUL_TOKEN", "CONSUL_HTTP_TOKEN")
    )
    # Consul Enterprise: put each registry namespace in the Consul namespace of the same name, instead of
    # tagging instances with it.
    consul_namespaces: bool = False
    consul_datacenter: str | None = None
    consul_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Spread over a watch: the longest blocking query the Consul adapter makes at once.
    consul_max_wait_seconds: float = Field(default=300.0, ge=1, le=600)
    consul_verify_tls: bool = True

    @field_validator("consul_http_addr")
    @classmethod
    def _valid_consul_address(cls, value: str) -> str:
        parse_address(value)
        return value


def get_registry(settings: RegistrySettings) -> ServiceRegistry:
    """The registry adapter the settings name (imported on demand: Consul's client is not needed locally)."""
    if settings.registry is RegistryBackend.CONSUL:
        from shared.registry.consul import ConsulRegistry

        return ConsulRegistry(settings)
    from shared.registry.postgres import PostgresRegistry

    return PostgresRegistry(settings.database_url)


__all__ = [
    "CheckType",
    "HealthCheck",
    "HealthStatus",
    "Instance",
    "Namespace",
    "RegistryBackend",
    "RegistrySettings",
    "ServiceRegistry",
    "ServiceSummary",
    "WatchResult",
    "get_registry",
]
