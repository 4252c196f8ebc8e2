"""The local gateway's settings: the functions' own, plus where it listens and how it limits."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from shared.config import PROJECT_ROOT, FunctionSettings


class GatewaySettings(FunctionSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_spec: Path = PROJECT_ROOT / "gateway-config" / "openapi.yaml"
    gateway_template: Path = PROJECT_ROOT / "template.yaml"
    gateway_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    # Lambda-like concurrency: at most this many warm instances of each function.
    gateway_function_concurrency: int = Field(default=4, ge=1, le=64)
    gateway_function_timeout_seconds: float = Field(default=29.0, gt=0)
    # Rate limits live in the OpenAPI document (x-berth-throttling); these override every route's
    # values when set, for an operator under attack or a test that needs small numbers.
    gateway_rate_limit_per_ip: int | None = Field(default=None, ge=1)
    gateway_rate_limit_per_user: int | None = Field(default=None, ge=1)
    gateway_rate_limit_window_seconds: int | None = Field(default=None, ge=1)
    # Off: the gateway counts nothing and leaves limiting to the functions (as on API Gateway).
    gateway_rate_limits: bool = True
    gateway_tls: bool = False
    gateway_state_dir: Path = PROJECT_ROOT / ".berth"
    # Prometheus /metrics of the gateway and its function instances (gateway.metrics); 0 turns it off.
    gateway_admin_address: str = "127.0.0.1"
    gateway_admin_port: int = Field(default=9182, ge=0, le=65535)


@lru_cache
def get_gateway_settings() -> GatewaySettings:
    return GatewaySettings()
