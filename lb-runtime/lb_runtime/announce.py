"""lb-runtime in the registry: when it follows the control plane it registers itself in
``internal-services`` (service ``lb-runtime``, its admin port) with a TTL check it passes every few
seconds, and leaves on shutdown. A stopped or dead proxy lapses to critical and is removed."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from shared.errors import DependencyError, NotFound
from shared.observability import get_logger, log_event
from shared.registry import CheckType, HealthCheck, HealthStatus, Instance, Namespace, ServiceRegistry

logger = get_logger("lb-runtime")
REPORT_SECONDS = 5.0


def lb_instance(address: str, admin_port: int) -> Instance:
    return Instance(
        id=f"lb-runtime-{socket.gethostname()}-{admin_port}"[:128],
        namespace=Namespace.INTERNAL_SERVICES,
        service="lb-runtime",
        address=address,
        port=admin_port,
        check=HealthCheck(type=CheckType.TTL, interval_seconds=3 * REPORT_SECONDS, deregister_after_seconds=60),
    )


async def announce(registry: ServiceRegistry, instance: Instance, stop: asyncio.Event) -> None:
    """Keep ``instance`` registered and passing until ``stop``, then deregister it."""
    registered = False
    try:
        while not stop.is_set():
            try:
                if not registered:
                    await registry.register(instance)
                    registered = True
                else:
                    await registry.report_health(Namespace.INTERNAL_SERVICES, instance.id, HealthStatus.PASSING)
            except NotFound:
                registered = False
                continue
            except (DependencyError, OSError) as exc:
                log_event(logger, "registry unavailable; will announce again", error=str(exc))
            except Exception:
                logger.exception("announcing to the registry failed; will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_SECONDS)
    finally:
        if registered:
            with contextlib.suppress(Exception):
                await registry.deregister(Namespace.INTERNAL_SERVICES, instance.id)
