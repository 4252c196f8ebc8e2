"""lb-runtime's settings: environment variables with the prefix ``BERTH_LB_``, validated at start."""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class LbSettings(BaseSettings):
    """Everything the proxy reads from its environment (or the CLI, which overrides it)."""

    model_config = SettingsConfigDict(env_prefix="BERTH_LB_", extra="ignore", frozen=True)

    log_level: str = "INFO"
    # Listeners bind here; a host that serves other machines sets 0.0.0.0 explicitly.
    bind_address: str = "127.0.0.1"
    admin_address: str = "127.0.0.1"
    admin_port: int = Field(default=9180, ge=0, le=65535)
    snapshot_path: str | None = None
    # How often the source is asked for changes (cheap when nothing changed: a stat, or one small query).
    snapshot_poll_seconds: float = Field(default=0.25, gt=0)
    # Idle upstream connections kept per instance; size it to the expected concurrency, or connections churn.
    upstream_pool_size: int = Field(default=256, ge=0)
    max_connections: int = Field(default=10_000, ge=1, description="client connections per listener")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    connect_timeout_seconds: float = Field(default=3.0, gt=0)
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    client_idle_timeout_seconds: float = Field(default=75.0, gt=0)
    upstream_idle_timeout_seconds: float = Field(default=55.0, gt=0)
    # Passive ejection: an instance that failed a connect or a request gets no new traffic for this long.
    eject_seconds: float = Field(default=10.0, ge=0)
    connect_retries: int = Field(default=2, ge=0)
    # How long SIGTERM (or an unbound listener) waits for in-flight work before closing what is left.
    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    # HTTP mode's implementation: the compiled extension when built (auto), or forced (see hot_path.py).
    hot_path: Literal["auto", "compiled", "python"] = "auto"
    # Worker processes sharing every listener port (SO_REUSEPORT) under one supervisor (lb_runtime.processes);
    # 1 is a single process doing everything. More than one needs fixed listener ports (not 0).
    processes: int = Field(default=1, ge=1, le=64)
    # Control plane only: the ports where verified host names route by Host (80 and 443 on an edge host).
    shared_http_port: int | None = Field(default=None, ge=1, le=65535)
    shared_https_port: int | None = Field(default=None, ge=1, le=65535)
    # Regions (lb_runtime.regions): the region this lb-runtime serves from (its listeners with a region
    # policy prefer instances there); the proxies in front of it whose X-Forwarded-For is believed (addresses
    # or networks, comma-separated or a JSON list); the client country -> region table, inline (JSON object,
    # "*" for every other country) and/or from a JSON file of the same shape (the file's entries win).
    region: str | None = Field(default=None, pattern=r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    country_regions: dict[str, str] = Field(default_factory=dict)
    country_regions_file: str | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"BERTH_LB_TRUSTED_PROXIES: {network!r} is not an address or network") from exc
        return value
