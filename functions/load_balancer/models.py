"""The load-balancer function's request and response bodies (the public contract)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.patterns import NO_CONTROL_PATTERN

SERVICE_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
PATH_PATTERN = re.compile(r"^/[\x21-\x7e]{0,1023}$")
# The listener port range the document declares (BERTH_LB_PORT_RANGE_START/END may narrow it, never widen it).
MIN_LISTENER_PORT = 20000
MAX_LISTENER_PORT = 29999
MAX_WEIGHT = 1000
MAX_WEIGHTED_INSTANCES = 100
MAX_LISTENER_CERTIFICATES = 20
MAX_CHAIN_PEM = 64 * 1024
REGION_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"
MAX_LISTENER_REGIONS = 16
MAX_KEY_PEM = 16 * 1024

Protocol = Literal["http", "tcp", "https"]
Algorithm = Literal["round_robin", "least_connections", "weighted"]


class ListenerHealthCheck(BaseModel):
    """How lb-runtime checks an instance before routing to it (active checks)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["http", "tcp"] = "http"
    path: str = Field(default="/", json_schema_extra={"pattern": PATH_PATTERN.pattern})  # checked by _path
    interval_seconds: int = Field(default=5, ge=1, le=300)
    timeout_seconds: int = Field(default=2, ge=1, le=60)
    healthy_threshold: int = Field(default=1, ge=1, le=10)
    unhealthy_threshold: int = Field(default=2, ge=1, le=10)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not PATH_PATTERN.fullmatch(path):
            raise ValueError("path must start with / and hold at most 1024 printable characters, no spaces")
        return path

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ListenerHealthCheck:
        if self.timeout_seconds > self.interval_seconds:
            raise ValueError("timeout_seconds must not be longer than interval_seconds")
        return self


class ListenerRegions(BaseModel):
    """How lb-runtime spreads the listener's requests over regions (lb_runtime.regions): its own region first
    (``client_region``: the client's, located by address), then ``order``; a region is passed over while it has
    fewer than ``min_healthy`` healthy instances or crosses a load limit, never for one without any."""

    model_config = ConfigDict(extra="forbid", strict=True)

    order: list[str] = Field(
        default_factory=list,
        max_length=MAX_LISTENER_REGIONS,
        json_schema_extra={"items": {"type": "string", "pattern": REGION_PATTERN}},
    )
    routing: Literal["local", "client_region"] = "local"
    min_healthy: int = Field(default=1, ge=1, le=1000)
    max_in_flight: int | None = Field(default=None, ge=1, le=100000)
    max_p95_ms: int | None = Field(default=None, ge=1, le=60000)

    @field_validator("order")
    @classmethod
    def _regions_named_once(cls, order: list[str]) -> list[str]:
        for name in order:
            if not re.match(REGION_PATTERN, name):
                raise ValueError(f"{name[:40]!r} is not a region name (1-32 lowercase letters, digits, hyphens)")
        if len(order) != len(set(order)):
            raise ValueError("order names a region twice")
        return order


_WEIGHTS_SCHEMA: dict[str, Any] = {"additionalProperties": {"type": "integer", "minimum": 0, "maximum": MAX_WEIGHT}}


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
    port: int | None = Field(default=None, ge=MIN_LISTENER_PORT, le=MAX_LISTENER_PORT)
    protocol: Protocol = "http"
    algorithm: Algorithm = "round_robin"
    weights: dict[str, int] | None = Field(
        default=None, max_length=MAX_WEIGHTED_INSTANCES, json_schema_extra=_WEIGHTS_SCHEMA
    )
    health_check: ListenerHealthCheck | None = None
    # https: the caller's certificates, presented by SNI (the first one to clients that name no host).
    certificate_ids: list[str] | None = Field(default=None, max_length=MAX_LISTENER_CERTIFICATES)
    regions: ListenerRegions | None = None

    _weights = field_validator("weights")(_check_weights)

    @field_validator("service", mode="before")
    @classmethod
    def _service_is_a_dns_label(cls, service: object) -> object:
        if isinstance(service, str) and not re.match(SERVICE_PATTERN, service):
            raise ValueError(
                f"{service[:70]!r} is not a DNS label: use 1-63 lowercase letters, digits and hyphens, starting "
                "and ending with a letter or digit (the service's <service>.internal name)"
            )
        return service


class UpdateListener(BaseModel):
    """PATCH: only the fields given change; ``health_check: null`` removes the check, ``regions: null`` the
    region policy."""

    model_config = ConfigDict(extra="forbid", strict=True)

    port: int | None = Field(default=None, ge=MIN_LISTENER_PORT, le=MAX_LISTENER_PORT)
    protocol: Protocol | None = None
    algorithm: Algorithm | None = None
    weights: dict[str, int] | None = Field(
        default=None, max_length=MAX_WEIGHTED_INSTANCES, json_schema_extra=_WEIGHTS_SCHEMA
    )
    health_check: ListenerHealthCheck | None = None
    certificate_ids: list[str] | None = Field(default=None, max_length=MAX_LISTENER_CERTIFICATES)
    regions: ListenerRegions | None = None

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
    certificate_ids: list[str] = []
    regions: ListenerRegions | None = None
    created_at: datetime
    updated_at: datetime


class ListenerPage(BaseModel):
    items: list[Listener]
    next_cursor: str | None


class CreateCertificate(BaseModel):
    """A TLS certificate upload: the PEM chain (leaf first, then intermediates) and its unencrypted PEM key."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=100, pattern=NO_CONTROL_PATTERN)
    certificate_chain: str = Field(min_length=1, max_length=MAX_CHAIN_PEM)
    private_key: str = Field(min_length=1, max_length=MAX_KEY_PEM)


class Certificate(BaseModel):
    """A stored certificate; its private key is never answered."""

    id: str
    name: str
    hostnames: list[str]
    subject: str
    issuer: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    created_at: datetime


class CertificatePage(BaseModel):
    items: list[Certificate]
    next_cursor: str | None


HOSTNAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"


class CreateHostname(BaseModel):
    """Claim a host name for the shared ports; it routes once verified and attached to a listener."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hostname: str = Field(min_length=3, max_length=253, pattern=HOSTNAME_PATTERN)
    listener_id: str | None = None


class UpdateHostname(BaseModel):
    """Attach the (verified) name to one of the caller's http or https listeners, or detach it (null)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    listener_id: str | None


class VerifyHostname(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    method: Literal["dns", "http"]


class HostnameVerification(BaseModel):
    """How to prove the name is the caller's: either record works."""

    dns_txt_name: str
    dns_txt_value: str
    http_url: str
    http_body: str


class Hostname(BaseModel):
    id: str
    hostname: str
    status: Literal["pending", "verified"]
    verified_by: str | None
    listener_id: str | None
    verification: HostnameVerification
    created_at: datetime


class HostnamePage(BaseModel):
    items: list[Hostname]
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
    region: str | None = None
    bytes_in: int = 0  # sent to the instance since lb-runtime started
    bytes_out: int = 0  # received from the instance since lb-runtime started


class RegionStats(BaseModel):
    """A listener's figures in one region of its instances (lb-runtime's regional split)."""

    instances: int
    healthy: int
    in_flight: int
    requests: int


class ListenerStats(BaseModel):
    listener_id: str
    rps: float
    latency_ms: LatencyMs
    requests: int
    errors: int
    active_connections: int
    instances: list[InstanceStats]
    regions: dict[str, RegionStats] = {}
    bytes_in: int = 0  # received from clients since lb-runtime started
    bytes_out: int = 0  # sent to clients since lb-runtime started


class TrafficErrors(BaseModel):
    """Failed requests in one step: connect failures and 5xx (errors), and 4xx answers (the client's)."""

    connect: int
    status_4xx: int
    status_5xx: int


class TrafficPoint(BaseModel):
    """One step of a listener's (or instance's) traffic history; ``ts`` is the step's start."""

    ts: datetime
    requests: int
    rps: float
    errors: TrafficErrors
    error_rate: float | None
    latency_ms: LatencyMs
    open_connections: int
    # In the step: a listener's from and to its clients, an instance's to and from that instance.
    bytes_in: int
    bytes_out: int


class InstanceSeries(BaseModel):
    id: str
    points: list[TrafficPoint]


class ListenerSeries(BaseModel):
    """A listener's traffic history from ``from`` to ``to`` in steps of ``step`` seconds."""

    model_config = ConfigDict(populate_by_name=True)

    listener_id: str
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    step: int
    points: list[TrafficPoint]
    instances: list[InstanceSeries]
