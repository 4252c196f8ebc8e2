"""Container hosts: registration, heartbeats and liveness.

Plain logic over ``HostStore``. A worker registers its host at start and heartbeats it; any worker may
mark hosts that fell silent as down. Host ports: ``shared.host_ports``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.host_store import HostStore
from worker.settings import WorkerSettings


@dataclass(frozen=True)
class Host:
    id: str
    address: str
    cpu_capacity: float
    memory_capacity_mb: int
    status: str
    heartbeat_at: datetime
    registered_at: datetime
    labels: dict[str, Any] = field(default_factory=dict)
    region: str = "local"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Host:
        return cls(
            id=row["id"],
            address=row["address"],
            cpu_capacity=float(row["cpu_capacity"]),
            memory_capacity_mb=int(row["memory_capacity_mb"]),
            status=row["status"],
            heartbeat_at=row["heartbeat_at"],
            registered_at=row["registered_at"],
            labels=dict(row["labels"] or {}),
            region=row.get("region") or "local",
        )


async def register_host(
    store: HostStore, host_id: str, address: str, cpu: float, memory_mb: int, region: str = "local"
) -> Host:
    """Register the host, or refresh a known one's address, capacity and region; it is ``up`` (unless
    draining)."""
    if not host_id:
        raise ValueError("a host needs an id")
    if cpu <= 0 or memory_mb <= 0:
        raise ValueError("a host's CPU and memory capacity must be positive")
    return Host.from_row(await store.upsert(host_id, address, cpu, memory_mb, region))


async def register_this_host(store: HostStore, settings: WorkerSettings) -> Host:
    """Register the host this worker runs on, as its settings describe it."""
    return await register_host(
        store,
        settings.host_id,
        settings.host_address,
        settings.host_cpu_capacity,
        settings.host_memory_capacity_mb,
        settings.region,
    )


async def heartbeat(store: HostStore, host_id: str) -> bool:
    """Record that the host is alive; False when it is not registered (its worker should register it)."""
    return await store.touch(host_id)


async def mark_stale_hosts_down(store: HostStore, max_silence_seconds: float) -> list[str]:
    """Mark hosts silent for longer than ``max_silence_seconds`` as down; the ids of those just marked."""
    if max_silence_seconds <= 0:
        raise ValueError("max_silence_seconds must be positive")
    return await store.mark_silent_down(max_silence_seconds)


async def live_hosts(store: HostStore) -> list[Host]:
    """The hosts that may take new work (status ``up``), by id."""
    return [Host.from_row(row) for row in await store.list_up()]
