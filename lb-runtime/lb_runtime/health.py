"""Active health checks: an HTTP GET of the listener's path (2xx/3xx is healthy) or a TCP connect."""

from __future__ import annotations

import asyncio
import contextlib

from lb_runtime.backends import Backend
from lb_runtime.snapshot import HealthCheck

USER_AGENT = "berth-lb-health-check"


async def probe_instance(backend: Backend, check: HealthCheck) -> bool:
    """One check of one instance; True when it passed within the check's timeout."""
    writer = None
    try:
        async with asyncio.timeout(check.timeout_seconds):
            reader, writer = await asyncio.open_connection(backend.address, backend.port)
            if check.type == "tcp":
                return True
            writer.write(
                f"GET {check.path} HTTP/1.1\r\nHost: {backend.address}:{backend.port}\r\n"
                f"User-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n".encode()
            )
            status_line = await reader.readline()
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    parts = status_line.split()
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() and 200 <= int(parts[1]) < 400


def apply_probe_result(backend: Backend, passed: bool, check: HealthCheck) -> bool:
    """Update ``backend``'s health from one result; True when its healthy state flipped.

    The first result decides at once (a new instance should not wait several intervals for traffic);
    afterwards the listener's thresholds of consecutive results apply.
    """
    before = backend.healthy
    if passed:
        backend.health_successes += 1
        backend.health_failures = 0
        if not backend.healthy and (not backend.probed or backend.health_successes >= check.healthy_threshold):
            backend.healthy = True
            backend.ejected_until = 0.0
    else:
        backend.health_failures += 1
        backend.health_successes = 0
        if backend.healthy and (not backend.probed or backend.health_failures >= check.unhealthy_threshold):
            backend.healthy = False
    backend.probed = True
    return backend.healthy != before
