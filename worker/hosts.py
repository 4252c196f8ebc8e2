"""Container hosts and their ports: registration, heartbeats, liveness and host-port allocation.

Plain logic over ``HostStore``. A worker registers its host at start and heartbeats it; any worker may
mark hosts that fell silent as down. Ports come from a configured range and are claimed in the database,
whose primary key on (host, port) makes the allocation safe when many allocators race.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.errors import ServiceUnavailable
from worker.host_store import HostStore
from worker.settings import WorkerSettings

# How many free ports one allocation round offers to claim; more means fewer rounds under contention.
_CANDIDATES_PER_ROUND = 8


class PortsExhausted(ServiceUnavailable):
    """Every port of the host's range is allocated."""

    code = "ports_exhausted"


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
        )


async def register_host(store: HostStore, host_id: str, address: str, cpu: float, memory_mb: int) -> Host:
    """Register the host, or refresh a known one's address and capacity; it is ``up`` (unless draining)."""
    if not host_id:
        raise ValueError("a host needs an id")
    if cpu <= 0 or memory_mb <= 0:
        raise ValueError("a host's CPU and memory capacity must be positive")
    return Host.from_row(await store.upsert(host_id, address, cpu, memory_mb))


async def register_this_host(store: HostStore, settings: WorkerSettings) -> Host:
    """Register the host this worker runs on, as its settings describe it."""
    return await register_host(
        store, settings.host_id, settings.host_address, settings.host_cpu_capacity, settings.host_memory_capacity_mb
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


async def allocate_port(store: HostStore, host_id: str, owner_kind: str, owner_id: uuid.UUID, port_range: range) -> int:
    """Allocate a free port of ``port_range`` on the host to the owner and return it.

    Each round reads a few free ports and claims the first one still free; a port taken by a concurrent
    allocator in between is skipped (ON CONFLICT DO NOTHING), never given twice. Raises PortsExhausted when
    the range has no free port, and NotFound when the host is not registered."""
    if len(port_range) == 0 or port_range.step < 1:
        raise ValueError(f"empty or descending port range {port_range}")
    if port_range[0] < 1 or port_range[-1] > 65535:
        raise ValueError(f"port range {port_range} reaches outside 1-65535")
    # Every lost round means a concurrent allocator won a port, so rounds are bounded by the range's size;
    # the bound only matters when ports are released and re-taken as fast as we look.
    for _ in range(len(port_range) + 1):
        candidates = await store.free_ports(
            host_id, port_range[0], port_range[-1], port_range.step, _CANDIDATES_PER_ROUND
        )
        if not candidates:
            break
        port = await store.claim_first_free(host_id, candidates, owner_kind, owner_id)
        if port is not None:
            return port
    raise PortsExhausted(
        f"No free port on host {host_id!r} in {port_range[0]}-{port_range[-1]}: "
        f"all {len(port_range)} ports are allocated."
    )


async def release_ports(store: HostStore, owner_kind: str, owner_id: uuid.UUID) -> list[tuple[str, int]]:
    """Free every host port the owner holds; the (host, port) pairs freed (none is not an error)."""
    return await store.release(owner_kind, owner_id)
