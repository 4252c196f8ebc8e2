"""What ``berth local`` reads from the environment: the gateway's settings plus where it keeps its state.

One pydantic-settings model, validated when a ``berth local`` command starts. The derived paths (pidfiles,
logs) and URLs (the gateway's, whether the local AWS is ours to run) are computed here and nowhere else, so
``up``, ``down`` and ``status`` always agree on where a process records itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from gateway.settings import GatewaySettings
from shared.config import PROJECT_ROOT


class LocalStackSettings(GatewaySettings):
    """The gateway's settings plus where ``berth local`` runs the local AWS and keeps its state."""

    # Pidfiles and logs of what ``up`` started; also the gateway's state dir unless that is set.
    local_state_dir: Path = PROJECT_ROOT / ".berth"
    local_start_timeout_seconds: float = Field(default=60.0, gt=0)
    local_stop_grace_seconds: float = Field(default=10.0, gt=0)

    @property
    def runs_local_aws(self) -> bool:
        """True when ``up`` should run moto itself rather than use an endpoint someone else runs."""
        return self.aws_endpoint == self.local_aws_url

    @property
    def gateway_url(self) -> str:
        """The URL clients reach the gateway on (a wildcard bind address is reached on 127.0.0.1)."""
        scheme = "https" if self.gateway_tls else "http"
        host = "127.0.0.1" if self.gateway_host in ("", "0.0.0.0") else self.gateway_host
        return f"{scheme}://{host}:{self.gateway_port}"

    @property
    def logs_dir(self) -> Path:
        """Where each process ``up`` started writes its log."""
        return self.local_state_dir / "logs"

    def pidfile(self, name: str) -> Path:
        """The file ``up`` records the PID of managed process ``name`` in."""
        return self.local_state_dir / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        """The log of managed process ``name``."""
        return self.logs_dir / f"{name}.log"
