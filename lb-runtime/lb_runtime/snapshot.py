"""What the proxy serves: the snapshot's shape and where snapshots come from.

A snapshot is always complete (every listener with its instances), never a delta, so a source that fails
or answers garbage can never leave the proxy half-updated: the route table is rebuilt from it or kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HealthCheck(_Frozen):
    type: Literal["http", "tcp"] = "http"
    path: str = Field(default="/healthz", pattern=r"^/")
    interval_seconds: float = Field(default=5.0, gt=0)
    timeout_seconds: float = Field(default=2.0, gt=0)
    healthy_threshold: int = Field(default=2, ge=1)
    unhealthy_threshold: int = Field(default=2, ge=1)


class Instance(_Frozen):
    id: str = Field(min_length=1)
    address: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=1, le=1000)
    # The region of the host the instance runs on (from the registry); None: unknown (served last).
    region: str | None = Field(default=None, min_length=1, max_length=32)


REGION_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"


class RegionPolicy(_Frozen):
    """How a listener spreads requests over regions (lb_runtime.regions): the preferred region first (this
    lb-runtime's, or the client's with ``client_region``), then ``order``; a region is skipped while it has
    fewer than ``min_healthy`` healthy instances or its load crosses a limit, never for one with none."""

    order: tuple[str, ...] = ()
    routing: Literal["local", "client_region"] = "local"
    min_healthy: int = Field(default=1, ge=1, le=1000)
    # Requests in flight per healthy instance above which new requests overflow to the next region.
    max_in_flight: float | None = Field(default=None, gt=0)
    # p95 latency (over the last window) above which the region takes no new requests for the next window.
    max_p95_ms: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _unique_order(self) -> RegionPolicy:
        if len(self.order) != len(set(self.order)):
            raise ValueError("regions.order names a region twice")
        return self


class Certificate(_Frozen):
    """A certificate an https listener presents: the PEM chain (leaf first) and its PEM private key.

    ``hostnames`` are the names it is chosen for by SNI (``*.example.com`` covers one label); when left
    empty they are read from the certificate's subject alternative names.
    """

    id: str = Field(min_length=1)
    chain_pem: str = Field(min_length=1, repr=False)
    key_pem: str = Field(min_length=1, repr=False)
    hostnames: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _parsed(self) -> Certificate:
        from lb_runtime.tls import certificate_hostnames  # cryptography is only needed for https

        names = certificate_hostnames(self.chain_pem, self.key_pem)
        if not self.hostnames:
            object.__setattr__(self, "hostnames", names)
        return self


HOSTNAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"


class HostRoute(_Frozen):
    """On a shared listener: requests whose Host is ``host`` go to these instances (one tenant's service).

    ``id`` names the route in /stats and /metrics like a listener id (the control plane uses the tenant's
    listener id); ``certificates`` (shared https listeners) are the ones presented for ``host`` by SNI.
    """

    id: str = Field(min_length=1)
    host: str = Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)
    algorithm: Literal["round_robin", "least_connections", "weighted"] = "round_robin"
    health_check: HealthCheck | None = None
    instances: tuple[Instance, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    # Instead of instances (the http side of an https site): 308 to https://host[:port]/same-target.
    redirect_https_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _unique_instances(self) -> HostRoute:
        ids = [instance.id for instance in self.instances]
        if len(ids) != len(set(ids)):
            raise ValueError(f"route {self.id}: instance ids repeat")
        if self.redirect_https_port is not None and self.instances:
            raise ValueError(f"route {self.id}: a redirect to https has no instances")
        return self


class Listener(_Frozen):
    id: str = Field(min_length=1)
    port: int = Field(ge=0, le=65535)
    protocol: Literal["http", "tcp", "https"] = "http"
    algorithm: Literal["round_robin", "least_connections", "weighted"] = "round_robin"
    health_check: HealthCheck | None = None
    instances: tuple[Instance, ...] = ()
    # https: TLS is terminated here with the certificate the client's SNI names (the first one otherwise).
    certificates: tuple[Certificate, ...] = ()
    # A shared port: each request goes to the route its Host names (unknown host: 404, never a default).
    routes: tuple[HostRoute, ...] = ()
    # http only, instead of instances or routes: answer every request 308 to https://host[:port]/same-target.
    redirect_https_port: int | None = Field(default=None, ge=1, le=65535)
    # Region-aware selection (lb_runtime.regions); None: one pool, regions ignored.
    regions: RegionPolicy | None = None

    @model_validator(mode="after")
    def _unique_instances(self) -> Listener:
        ids = [instance.id for instance in self.instances]
        if len(ids) != len(set(ids)):
            raise ValueError(f"listener {self.id}: instance ids repeat")
        certificates = self.all_certificates()
        if self.protocol == "https" and not certificates:
            raise ValueError(f"listener {self.id}: https needs at least one certificate")
        if self.protocol != "https" and certificates:
            raise ValueError(f"listener {self.id}: certificates are for https listeners only")
        hosts = [route.host for route in self.routes]
        if len(hosts) != len(set(hosts)):
            raise ValueError(f"listener {self.id}: a host is routed twice")
        if self.routes and (self.instances or self.protocol == "tcp"):
            raise ValueError(f"listener {self.id}: host routes replace instances, on http or https listeners")
        if self.redirect_https_port is not None and (self.protocol != "http" or self.instances or self.routes):
            raise ValueError(f"listener {self.id}: a redirect to https is an http listener without instances")
        return self

    def all_certificates(self) -> tuple[Certificate, ...]:
        """The listener's own certificates, then its routes' (the first one is the default)."""
        return self.certificates + tuple(certificate for route in self.routes for certificate in route.certificates)

    def route_certificates(self) -> dict[str, tuple[Certificate, ...]] | None:
        """A shared port's certificates by route host (each host is given one of its own route's only);
        None for a listener of one service."""
        return {route.host: route.certificates for route in self.routes} if self.routes else None

    def route_listeners(self) -> tuple[Listener, ...]:
        """Each host route as a listener of its own (its balancer, health check and figures), same port."""
        return tuple(
            Listener(
                id=route.id,
                port=self.port,
                protocol="http",
                algorithm=route.algorithm,
                health_check=route.health_check,
                instances=route.instances,
                redirect_https_port=route.redirect_https_port,
            )
            for route in self.routes
        )


class Snapshot(_Frozen):
    listeners: tuple[Listener, ...] = ()

    @model_validator(mode="after")
    def _unique_listeners(self) -> Snapshot:
        ids = [listener.id for listener in self.listeners]
        ids += [route.id for listener in self.listeners for route in listener.routes]
        if len(ids) != len(set(ids)):
            raise ValueError("listener ids repeat (host routes included)")
        ports = [listener.port for listener in self.listeners if listener.port]
        if len(ports) != len(set(ports)):
            raise ValueError("listener ports repeat")
        return self


class SnapshotSource(Protocol):
    """Where the proxy's configuration comes from (a JSON file here; the control plane's database later)."""

    async def get(self) -> dict[str, Any] | None:
        """The full current snapshot as plain data (None may mean: unchanged since the last call)."""
        ...


class StaticSnapshotSource:
    """A snapshot held in memory; ``set`` replaces it (tests, embedding)."""

    def __init__(self, snapshot: dict[str, Any] | None = None) -> None:
        self._snapshot = snapshot if snapshot is not None else {"listeners": []}
        self._changed = True

    def set(self, snapshot: dict[str, Any]) -> None:
        """Replace the snapshot; the next ``get`` returns it."""
        self._snapshot = snapshot
        self._changed = True

    async def get(self) -> dict[str, Any] | None:
        """The snapshot if it changed since the last call, else None."""
        if not self._changed:
            return None
        self._changed = False
        return self._snapshot


class SnapshotReadError(Exception):
    """The source could not produce a snapshot (unreadable file, invalid JSON)."""


class JsonFileSnapshotSource:
    """A JSON file, re-read whenever its modification time (or size) changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None

    async def get(self) -> dict[str, Any] | None:
        """The file's snapshot when it changed since the last call, None when unchanged."""
        # A stat (and, on change, a read of a small local file) is cheaper than a hop to a thread.
        return self._read_if_changed()

    def _read_if_changed(self) -> dict[str, Any] | None:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise SnapshotReadError(f"cannot stat {self.path}: {exc.strerror}") from exc
        marker = (stat.st_mtime_ns, stat.st_size)
        if marker == self._seen:
            return None
        self._seen = marker
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SnapshotReadError(f"cannot read {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise SnapshotReadError(f"{self.path}: the snapshot must be a JSON object")
        return data
