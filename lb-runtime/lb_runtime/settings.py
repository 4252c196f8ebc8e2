"""lb-runtime's settings: environment variables with the prefix ``BERTH_LB_``, validated at start."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
