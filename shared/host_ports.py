"""Host-port allocation, shared by the scheduler (the containers function) and the host workers.

Ports come from a configured range and are claimed in the database, whose primary key on (host, port)
makes the allocation safe when many allocators race.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from shared.errors import ServiceUnavailable
from shared.host_store import HostStore

# How many free ports one allocation round offers to claim; more means fewer rounds under contention.
_CANDIDATES_PER_ROUND = 8


class PortOwnerKind(StrEnum):
    """What holds a host port (``port_allocations.owner_kind``); the owner id is of that kind."""

    CONTAINER = "container"


class PortsExhausted(ServiceUnavailable):
    """Every port of the host's range is allocated."""

    code = "ports_exhausted"


async def allocate_port(
    store: HostStore, host_id: str, owner_kind: PortOwnerKind, owner_id: uuid.UUID, port_range: range
) -> int:
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


async def release_ports(store: HostStore, owner_kind: PortOwnerKind, owner_id: uuid.UUID) -> list[tuple[str, int]]:
    """Free every host port the owner holds; the (host, port) pairs freed (none is not an error)."""
    return await store.release(owner_kind, owner_id)
