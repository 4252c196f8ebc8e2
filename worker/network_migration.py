"""Moving containers off the legacy shared network ``berth-customers`` onto their tenant's network.

The reconciler calls ``move_to_tenant_network`` for a running container it finds still on the shared network.
The container keeps its id, its published host ports and its registry entry: Docker 20.10 moves the port
mapping to the network that remains once the shared one is detached (checked by experiment and by
tests/integration/test_network_migration.py), with a gap of a few milliseconds while docker-proxy is
restarted. When the service has another passing replica, the container is first marked critical in the registry
(never removed) for ``worker_stop_drain_seconds``, so lb-runtime sends its requests elsewhere during the gap;
a sole replica moves at once (lb-runtime's connect retries ride out most of the gap). Replicas of one service
move one at a time. Its new tenant-network address is
recorded, and the registration round that follows registers it for the internal DNS. Its nameserver stays
Docker's default until the container is created again: Docker cannot change a container's DNS in place.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import Any

from shared.observability import get_logger, log_event
from shared.registry import Namespace
from worker.container_jobs import CUSTOMER_NETWORK, container_address
from worker.context import JobContext

logger = get_logger("worker")

# One move at a time per (tenant, service): two replicas draining at once would leave lb-runtime none.
_service_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


def _service_lock(row: dict[str, Any]) -> asyncio.Lock:
    key = (str(row["owner_id"]), str(row.get("service") or row["name"]))
    lock = _service_locks.get(key)
    if lock is None:
        lock = _service_locks[key] = asyncio.Lock()
    return lock


def on_legacy_network(state: dict[str, Any] | None) -> bool:
    """Whether a running container still has an address on the shared pre-tenant network."""
    return state is not None and bool((state.get("ip_addresses") or {}).get(CUSTOMER_NETWORK))


async def _has_other_passing_replica(context: JobContext, row: dict[str, Any]) -> bool:
    if context.registry_sync is None:
        return False
    service = row.get("service") or row["name"]
    instances = await context.registry_sync.registry.instances(
        Namespace.CLIENT_CONTAINERS, service, owner_id=uuid.UUID(str(row["owner_id"])), passing_only=True
    )
    return any(instance.id != str(row["id"]) for instance in instances)


async def move_to_tenant_network(context: JobContext, row: dict[str, Any], docker_id: str) -> dict[str, Any] | None:
    """Attach the container to its tenant's network, detach it from the shared one, record its new address;
    the caller holds the container's lock. Returns the container's state afterwards."""
    assert context.networks is not None
    container_id = str(row["id"])
    sync = context.registry_sync
    async with _service_lock(row):
        drain = sync is not None and await _has_other_passing_replica(context, row)
        if drain and sync is not None:
            await sync.set_moving(container_id, True)
            await asyncio.sleep(context.settings.worker_stop_drain_seconds)
        try:
            network = await context.networks.move_to_tenant_network(uuid.UUID(str(row["owner_id"])), docker_id)
            state = await context.runtime.container_state(docker_id)
            await context.containers.set_network_address(container_id, container_address(state))
        finally:
            if drain and sync is not None:
                await sync.set_moving(container_id, False)
                # lb-runtime sees it passing again before the service's next replica moves.
                await asyncio.sleep(context.settings.worker_stop_drain_seconds)
    log_event(
        logger,
        "container migrated to its tenant network",
        container_id=container_id,
        network=network.name,
        drained=drain,
    )
    return state
