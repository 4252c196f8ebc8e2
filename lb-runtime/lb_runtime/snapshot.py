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


class Listener(_Frozen):
    id: str = Field(min_length=1)
    port: int = Field(ge=0, le=65535)
    protocol: Literal["http", "tcp"] = "http"
    algorithm: Literal["round_robin", "least_connections", "weighted"] = "round_robin"
    health_check: HealthCheck | None = None
    instances: tuple[Instance, ...] = ()

    @model_validator(mode="after")
    def _unique_instances(self) -> Listener:
        ids = [instance.id for instance in self.instances]
        if len(ids) != len(set(ids)):
            raise ValueError(f"listener {self.id}: instance ids repeat")
        return self


class Snapshot(_Frozen):
    listeners: tuple[Listener, ...] = ()

    @model_validator(mode="after")
    def _unique_listeners(self) -> Snapshot:
        ids = [listener.id for listener in self.listeners]
        if len(ids) != len(set(ids)):
            raise ValueError("listener ids repeat")
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
