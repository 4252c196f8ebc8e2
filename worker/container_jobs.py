"""Container jobs: converge a host's Docker on what the tenant wants of one container.

``container.reconcile`` is idempotent: it looks at the record (desired state) and at Docker (the container
labelled with the record's id) and does only what is missing, so a redelivered or repeated job never makes
a second container. Jobs for one container run one at a time in this process, and the reconciler
(worker/reconciler.py) converges through the same code under the same lock, so the two never race.

A container with a health check is ``running`` only once the worker's own check passes (the images are
often FROM scratch, so nothing runs inside them): an HTTP GET on the container's address on its tenant's
network (2xx and 3xx pass) or a TCP connect.

Each container joins only its tenant's network on this host (worker.tenant_networks) with that network's
gateway as its nameserver (the internal DNS, worker.internal_dns); the address it has there is recorded once
it runs, for the internal DNS's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
import weakref
from dataclasses import dataclass, replace
from typing import Any

import httpx

from shared.errors import DependencyError
from shared.host_ports import PortOwnerKind, allocate_port, release_ports
from shared.observability import get_logger, log_event
from shared.secrets import SecretUnreadable, open_env
from worker.container_runtime import (
    CLUSTER_LABEL,
    CONTAINER_ID_LABEL,
    OWNER_LABEL,
    ContainerSpec,
    RuntimeFinal,
    RuntimeRetryable,
)
from worker.context import JobContext
from worker.image_jobs import JobFailed, ensure_local_image
from worker.log_shipper import ship_container
from worker.stats import Sample, sample_before_stop, store_final_sample
from worker.tenant_networks import LEGACY_CUSTOMER_NETWORK, is_tenant_network

logger = get_logger("worker")

# The shared network of every customer container before tenant networks; a context without tenant networks
# (some tests') still uses it, and the reconciler moves containers off it.
CUSTOMER_NETWORK = LEGACY_CUSTOMER_NETWORK
STOP_TIMEOUT_SECONDS = 10
# The first health checks after a start come quickly, then slow down to the check's own interval.
FIRST_CHECK_DELAY_SECONDS = 0.25
FIRST_CHECK_BACKOFF = 1.5

# Docker's words when a published port is held by something else (a program or another installation's
# container): "Bind for 127.0.0.1:31084 failed: port is already allocated", "... 127.0.0.1:31084: bind:
# address already in use".
_PORT_TAKEN = re.compile(r":(\d{1,5})(?: failed: port is already allocated|: bind: address already in use)")
MAX_PORT_MOVES = 3

# One lock per container while jobs for it run or wait; unused locks vanish with their last reference.
_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def container_lock(container_id: str) -> asyncio.Lock:
    """The lock every change to one container's Docker state is made under (jobs and reconciler)."""
    lock = _locks.get(container_id)
    if lock is None:
        lock = _locks[container_id] = asyncio.Lock()
    return lock


def docker_name(container_id: str) -> str:
    return f"berth-{container_id}"


def exit_reason(state: dict[str, Any]) -> str:
    """Why a container is not running, from its Docker state: ``exited with code 137 (out of memory)``."""
    reason = f"exited with code {state.get('exit_code')}"
    return reason + " (out of memory)" if state.get("oom_killed") else reason


# ------------------------------------------------------------------------------------------ health checks


@dataclass(frozen=True)
class HealthCheck:
    """A container's health check as stored (the containers function fills the defaults)."""

    type: str
    port: int
    path: str = "/"
    interval_seconds: float = 10.0
    timeout_seconds: float = 2.0
    retries: int = 3
    start_period_seconds: float = 0.0

    @classmethod
    def of(cls, row: dict[str, Any]) -> HealthCheck | None:
        """The record's health check; None when it has none (or names no port it could check)."""
        raw = row.get("health_check")
        if not raw:
            return None
        ports = row.get("ports") or []
        port = raw.get("port") or (ports[0]["container_port"] if ports else None)
        if not port:
            return None
        return cls(
            type="tcp" if raw.get("type") == "tcp" else "http",
            port=int(port),
            path=str(raw.get("path") or "/"),
            interval_seconds=float(raw.get("interval_seconds") or 10),
            timeout_seconds=float(raw.get("timeout_seconds") or 2),
            retries=max(1, int(raw.get("retries") or 3)),
            start_period_seconds=float(raw.get("start_period_seconds") or 0),
        )

    @property
    def first_pass_window_seconds(self) -> float:
        """How long after a start the first check may take to pass before the container is unhealthy."""
        return self.start_period_seconds + self.retries * self.interval_seconds

    def describe(self) -> str:
        return f"GET {self.path} on port {self.port}" if self.type == "http" else f"TCP connect to port {self.port}"


def container_address(state: dict[str, Any] | None) -> str | None:
    """The container's IP address on its tenant network (else on the legacy shared one): where the worker
    reaches it, and what the internal DNS answers."""
    if state is None:
        return None
    addresses = state.get("ip_addresses") or {}
    tenant = [address for name, address in sorted(addresses.items()) if is_tenant_network(name) and address]
    return tenant[0] if tenant else addresses.get(CUSTOMER_NETWORK) or None


async def probe(check: HealthCheck, address: str | None) -> str | None:
    """Run the check once against ``address``; None when it passes, otherwise why it failed."""
    what = check.describe()
    if address is None:
        return f"{what}: the container has no address on its network"
    if check.type == "http":
        try:
            # trust_env=False: the platform's own proxy settings must not route checks elsewhere.
            async with httpx.AsyncClient(timeout=check.timeout_seconds, trust_env=False) as http:
                response = await http.get(f"http://{address}:{check.port}{check.path}")
        except httpx.TimeoutException:
            return f"{what} timed out after {check.timeout_seconds:g} s"
        except httpx.HTTPError as exc:
            return f"{what} failed: {_connect_error(exc)}"
        if 200 <= response.status_code < 400:
            return None
        return f"{what} answered {response.status_code}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, check.port), check.timeout_seconds)
    except TimeoutError:
        return f"{what} timed out after {check.timeout_seconds:g} s"
    except OSError as exc:
        return f"{what} failed: {_connect_error(exc)}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def _connect_error(exc: BaseException) -> str:
    """The operating system's words for a failed connection (``connection refused``), without addresses."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno).lower()
    return type(exc).__name__


async def settle_after_start(context: JobContext, row: dict[str, Any], docker_id: str) -> str:
    """Record the status of a container just started: ``running`` (at once without a health check, else once
    a check passes), ``unhealthy`` when none passes within the check's window, or failed/stopped when it
    exited meanwhile. Returns the status recorded (or the one that was meant, when the wish changed)."""
    store = context.containers
    container_id, desired = str(row["id"]), row["desired_state"]
    check = HealthCheck.of(row)
    # Within a job, leave time to record the outcome before the job's own timeout.
    window = check.first_pass_window_seconds if check else 0.0
    window = min(window, context.settings.worker_job_timeout_seconds * 0.8)
    deadline = time.monotonic() + window
    delay = FIRST_CHECK_DELAY_SECONDS
    while True:
        state = await context.runtime.container_state(docker_id)
        if state is None or state.get("status") not in ("running", "restarting"):
            status = "failed" if state is None or state.get("exit_code") else "stopped"
            reason = "removed while starting" if state is None else exit_reason(state)
            await store.record_exit(
                container_id, desired, None if state is None else state.get("exit_code"), status, reason
            )
            log_event(logger, "container exited while starting", container_id=container_id, reason=reason)
            return status
        if state.get("status") == "running":
            await store.set_network_address(container_id, container_address(state))
        if check is None:
            await store.set_status(container_id, desired, "running")
            log_event(logger, "container running", container_id=container_id, docker_id=docker_id)
            return "running"
        failure = await probe(check, container_address(state))
        if failure is None:
            await store.set_status(container_id, desired, "running")
            log_event(logger, "container running: health check passed", container_id=container_id)
            return "running"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = f"health check did not pass within {window:g} s of the start: {failure}"
            await store.set_status(container_id, desired, "unhealthy", reason)
            log_event(logger, "container unhealthy", container_id=container_id, reason=reason)
            return "unhealthy"
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * FIRST_CHECK_BACKOFF, check.interval_seconds)


# ------------------------------------------------------------------------------------------ converging


async def find_container(context: JobContext, row: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The Docker container of the record (by its recorded id, else by its label) and its state."""
    runtime = context.runtime
    if row["docker_id"]:
        state = await runtime.container_state(row["docker_id"])
        if state is not None:
            return row["docker_id"], state
    container_id = str(row["id"])
    for found in await runtime.list_labelled_containers(CONTAINER_ID_LABEL, container_id):
        if found["labels"].get(CONTAINER_ID_LABEL) == container_id:
            return found["id"], await runtime.container_state(found["id"])
    return None, None


def _spec(context: JobContext, row: dict[str, Any], reference: str) -> ContainerSpec:
    try:
        secret_env = open_env(context.settings, row.get("secret_env"))
    except SecretUnreadable as exc:
        # The message names the cause, never a value.
        raise JobFailed(
            "The container's secret environment cannot be opened on this host (BERTH_SECRET_KEY differs "
            "from the one it was sealed with); set the secrets again."
        ) from exc
    ports = row["ports"] or []
    return ContainerSpec(
        name=docker_name(str(row["id"])),
        image=reference,
        network=CUSTOMER_NETWORK,
        labels={
            CONTAINER_ID_LABEL: str(row["id"]),
            OWNER_LABEL: str(row["owner_id"]),
            CLUSTER_LABEL: context.settings.cluster_id,
        },
        command=row["command"],
        env={**(row["env"] or {}), **secret_env},
        container_ports=[(port["container_port"], port.get("protocol", "tcp")) for port in ports],
        host_bind=context.settings.host_address,
        host_ports={port["container_port"]: port["host_port"] for port in ports if port.get("host_port")},
        cpu=float(row["cpu"]),
        memory_mb=int(row["memory_mb"]),
    )


async def _create_on_network(context: JobContext, row: dict[str, Any], spec: ContainerSpec) -> str:
    """Create the container on its tenant's network (made when missing, under the tenant's lock so it is not
    collected meanwhile), with the network's internal DNS as its nameserver; on the legacy shared network
    when this worker has no tenant networks."""
    if context.networks is None:
        await context.runtime.ensure_network(CUSTOMER_NETWORK)
        return await context.runtime.create_container(spec)
    owner_id = uuid.UUID(str(row["owner_id"]))
    async with context.networks.lock(owner_id):
        network = await context.networks.ensure(owner_id)
        return await context.runtime.create_container(replace(spec, network=network.name, dns=[str(network.gateway)]))


async def _leave_traffic(context: JobContext, container_id: str) -> None:
    """Take a running container out of the registry, then give lb-runtime (which watches it) time to send
    new requests elsewhere while those in flight finish: a stop or delete drops no request."""
    if context.registry_sync is None:
        return
    try:
        await context.registry_sync.deregister(container_id)
    except (DependencyError, OSError) as exc:
        log_event(logger, "could not deregister before stopping", container_id=container_id, error=str(exc))
        return
    await asyncio.sleep(context.settings.worker_stop_drain_seconds)


async def _ship_final_logs(context: JobContext, container_id: str, docker_id: str) -> None:
    """Keep the container's last log lines before Docker forgets them; never blocks the removal."""
    if context.logs is None:
        return
    try:
        await ship_container(context.logs, context.runtime, container_id, docker_id)
    except (RuntimeRetryable, RuntimeFinal, DependencyError) as exc:
        log_event(logger, "final log shipment failed", container_id=container_id, error=str(exc))


async def reconcile_container(context: JobContext, payload: dict[str, Any]) -> None:
    container_id = str(payload.get("container_id") or "")
    async with container_lock(container_id):
        await converge_locked(context, container_id, restart=bool(payload.get("restart")))


async def converge_locked(
    context: JobContext, container_id: str, *, restart: bool = False, port_moves: int = 0
) -> None:
    """Make Docker match the record's desired state; the caller holds ``container_lock(container_id)``."""
    store = context.containers
    row = await store.get(container_id)
    if row is None:
        log_event(logger, "container job skipped: no such container", container_id=container_id)
        return
    if row["host_id"] != context.settings.host_id:
        # A stale job: the container moved to another host (after this host was down), and every move sends
        # a fresh job to the new host's queue. Nothing is left to do here.
        log_event(
            logger, "container job skipped: it lives on another host", container_id=container_id, host_id=row["host_id"]
        )
        return
    desired = row["desired_state"]
    runtime = context.runtime
    docker_id, state = await find_container(context, row)

    running = state is not None and state.get("status") in ("running", "restarting")
    if desired == "deleted":
        if docker_id is not None:
            if running:
                # Stopping first, as a stop does: the registry sync registers only running containers, so it
                # cannot put the container back into traffic while it drains.
                await store.set_status(container_id, desired, "stopping")
                await _leave_traffic(context, container_id)
                # Removed only after its last logs are shipped: the use meanwhile goes unbilled (a delete).
                await _store_final_sample(context, await _final_sample(context, container_id, docker_id))
            await _ship_final_logs(context, container_id, docker_id)
            await runtime.remove_container(docker_id)
        await release_ports(context.hosts, PortOwnerKind.CONTAINER, uuid.UUID(container_id))
        await store.set_docker_id(container_id, None)
        await store.set_status(container_id, "deleted", "deleted")
        log_event(logger, "container deleted", container_id=container_id)
        return

    if desired == "stopped":
        if running and docker_id is not None:
            if not await store.set_status(container_id, desired, "stopping"):
                return
            await _leave_traffic(context, container_id)
            final = await _final_sample(context, container_id, docker_id)
            ended_ns = await runtime.stop_container(docker_id, STOP_TIMEOUT_SECONDS)
            await _store_final_sample(context, final, ended_ns)
        if await store.set_status(container_id, desired, "stopped") and running and docker_id is not None:
            stopped_state = await runtime.container_state(docker_id)
            if stopped_state is not None and stopped_state.get("finished_at") is not None:
                await store.stamp_stop(container_id, stopped_state["finished_at"])
        log_event(logger, "container stopped", container_id=container_id)
        return

    # desired == "running"
    if docker_id is not None and state is not None and state.get("status") == "dead":
        # Docker could not finish removing or stopping it; it cannot start again: make a new one.
        await runtime.remove_container(docker_id)
        docker_id, running = None, False
    if docker_id is None:
        # A container placed (or moved) here may need its image fetched onto this host first.
        spec = _spec(context, row, await ensure_local_image(context, row))
        if not await store.set_status(container_id, desired, "creating"):
            return
        docker_id = await _create_on_network(context, row, spec)
        running = False
    if docker_id != row["docker_id"]:
        await store.set_docker_id(container_id, docker_id)
    if running and restart:
        if not await store.set_status(container_id, desired, "stopping"):
            return
        await _leave_traffic(context, container_id)
        final = await _final_sample(context, container_id, docker_id)
        ended_ns = await runtime.stop_container(docker_id, STOP_TIMEOUT_SECONDS)
        await _store_final_sample(context, final, ended_ns)
        running = False
    if running and row["status"] in ("running", "unhealthy"):
        # Already up and watched by the reconciler's health checks: nothing to change.
        return
    if not running:
        try:
            await runtime.start_container(docker_id)
        except (RuntimeRetryable, RuntimeFinal) as exc:
            taken = taken_port(str(exc))
            if taken is None or port_moves >= MAX_PORT_MOVES:
                raise
            # Something outside Berth holds the port: give the container another one and create it again.
            await _move_off_port(context, row, docker_id, taken)
            await converge_locked(context, container_id, restart=False, port_moves=port_moves + 1)
            return
        # Recorded once Docker has started it, not before: metering bills a replica from its ``starting``
        # event, so the event must not precede the start (Docker's network setup takes a few hundred ms).
        # When the wish changed meanwhile, the job that changed it stops the container again.
        if not await store.set_status(container_id, desired, "starting"):
            return
    await settle_after_start(context, row, docker_id)


async def _final_sample(context: JobContext, container_id: str, docker_id: str) -> Sample | None:
    """The container's counters just before it stops, so its CPU and egress are metered to the end; the caller
    stops it next and then stores the sample (``_store_final_sample``) with the CPU counter the stop saw last."""
    if context.stats is None:
        return None
    return await sample_before_stop(context.runtime, container_id, docker_id)


async def _store_final_sample(context: JobContext, sample: Sample | None, ended_ns: int | None = None) -> None:
    if context.stats is not None:
        await store_final_sample(context.stats, sample, ended_ns)


def taken_port(error: str) -> int | None:
    """The host port Docker could not bind because something else holds it, from its error message."""
    found = _PORT_TAKEN.search(error)
    return int(found.group(1)) if found else None


async def _move_off_port(context: JobContext, row: dict[str, Any], docker_id: str, taken: int) -> None:
    container_id = str(row["id"])
    owner = uuid.UUID(container_id)
    ports = [dict(port) for port in row["ports"] or []]
    for port in ports:
        if port.get("host_port") == taken:
            port["host_port"] = await allocate_port(
                context.hosts,
                context.settings.host_id,
                PortOwnerKind.CONTAINER,
                owner,
                context.settings.host_port_range,
            )
    await context.runtime.remove_container(docker_id)
    await context.containers.set_docker_id(container_id, None)
    await context.containers.set_ports(container_id, ports)
    await context.hosts.release_port(context.settings.host_id, taken, PortOwnerKind.CONTAINER, owner)
    log_event(logger, "host port taken outside Berth; moved to another", container_id=container_id, port=taken)


async def fail_container(context: JobContext, payload: dict[str, Any], reason: str) -> None:
    await context.containers.fail(str(payload.get("container_id") or ""), reason)
