"""The host worker's reconciler: every ``worker_reconcile_interval_seconds`` it compares what tenants want
of this host's containers with what Docker runs, and repairs what no job will.

- A crashed container (desired running, Docker says exited or dead) is restarted as its restart policy
  says (``always``; ``on-failure[:N]`` after a non-zero exit, at most N times; ``no`` never), after a
  backoff of base * 2^k seconds (capped), k counting the quick crashes in a row and starting over once a
  container ran for the reset time. Docker's own restart policy stays "no": restarts are counted here.
- Health checks keep running on running and unhealthy containers: ``retries`` failures in a row make a
  container unhealthy, one pass makes it running again.
- Lost jobs: a container removed outside Berth is created again, a stopped one still running is stopped,
  a deleted one still there is removed, and a status stuck in pending/creating/starting/stopping for
  ``STUCK_AFTER_INTERVALS`` intervals is converged, all through the job's own code under its lock.
- Migration: a running container still on the legacy shared network moves to its tenant's network
  (worker.network_migration), keeping its host ports and registry entry.
- Orphans: containers labelled with this cluster whose record is missing, deleted, on another host, or
  that duplicate the record's own container are removed once seen for ``worker_orphan_grace_seconds``.

Each container is tended in a task of its own (one at a time per container), so a backoff wait or a slow
health check never holds up the others; an error with one container is logged and retried next round.
Stopping the reconciler leaves every customer container as it is.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from worker.container_jobs import (
    HealthCheck,
    container_address,
    container_lock,
    converge_locked,
    exit_reason,
    find_container,
    probe,
    settle_after_start,
)
from worker.container_runtime import CLUSTER_LABEL, CONTAINER_ID_LABEL, RuntimeFinal, RuntimeRetryable
from worker.container_store import WorkerContainerStore
from worker.context import JobContext
from worker.image_jobs import JobFailed, JobRetry
from worker.network_migration import move_to_tenant_network, on_legacy_network
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings

logger = get_logger("worker")

# A status a job sets on its way and replaces within seconds; one that stays longer lost its job.
IN_FLIGHT_STATUSES = ("pending", "creating", "starting", "stopping")
STUCK_AFTER_INTERVALS = 3
# How many containers are inspected, converged or checked at the same time.
RECONCILE_CONCURRENCY = 8
# Failures with one container that the next round may well not see again.
_PASSING_ERRORS = (DependencyError, RuntimeRetryable, RuntimeFinal, JobRetry, OSError)


class Action(enum.Enum):
    NOTHING = "nothing"
    CONVERGE = "converge"  # run the reconcile job's code path
    CRASHED = "crashed"  # apply the restart policy
    CHECK_HEALTH = "check health"


def decide(row: dict[str, Any], docker_status: str | None, stuck_after_seconds: float) -> Action:
    """What to do about one container: its record (desired state, status, how long unchanged) and Docker's
    status of it (None: Docker has no such container)."""
    desired, status = row["desired_state"], row["status"]
    stuck = status in IN_FLIGHT_STATUSES and float(row["idle_seconds"] or 0) > stuck_after_seconds
    docker_running = docker_status in ("running", "restarting")
    if desired == "deleted":
        return Action.CONVERGE if status != "deleted" else Action.NOTHING
    if desired == "stopped":
        return Action.CONVERGE if docker_running or status in ("running", "unhealthy") or stuck else Action.NOTHING
    # desired running
    if status == "lost":
        return Action.NOTHING  # its host was declared down; rescheduling moves it (worker/rescheduling.py)
    if status in IN_FLIGHT_STATUSES:
        return Action.CONVERGE if stuck else Action.NOTHING
    if docker_status is None or docker_status == "created":
        # Removed outside Berth (or never started): make it run again; a container that failed or stopped
        # for good stays so until the tenant acts.
        return Action.CONVERGE if status in ("running", "unhealthy") else Action.NOTHING
    if docker_status in ("exited", "dead"):
        return Action.CRASHED if status in ("running", "unhealthy", "failed") else Action.NOTHING
    if docker_running:
        # Running although recorded failed or stopped (started outside Berth, or a job gave up too early).
        return Action.CHECK_HEALTH if status in ("running", "unhealthy") else Action.CONVERGE
    return Action.NOTHING  # paused, being removed: not ours to change


@dataclass(frozen=True)
class RestartPolicy:
    """``no``, ``always`` or ``on-failure[:N]`` (N: most restarts; none: unlimited)."""

    name: str
    max_restarts: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> RestartPolicy:
        name, _, limit = (text or "no").partition(":")
        if name == "on-failure":
            return cls(name, int(limit) if limit.isdigit() else None)
        return cls("always") if name == "always" else cls("no")

    def refusal(self, exit_code: int | None, restart_count: int) -> str | None:
        """None when the policy restarts after ``exit_code``; otherwise what to add to the exit reason."""
        if self.name == "always":
            return None
        if self.name == "on-failure" and exit_code != 0:
            if self.max_restarts is None or restart_count < self.max_restarts:
                return None
            return f"; not restarted: the on-failure limit of {self.max_restarts} restarts is reached"
        return ""


def backoff_seconds(settings: WorkerSettings, crashes_in_a_row: int) -> float:
    """base * 2^k, capped at the maximum."""
    base, cap = settings.worker_restart_backoff_base_seconds, settings.worker_restart_backoff_max_seconds
    return min(cap, base * 2 ** min(crashes_in_a_row, 62))


@dataclass
class _Health:
    failures: int = 0
    next_check: float = 0.0


@dataclass(frozen=True)
class _PlannedRestart:
    due: datetime
    finished_at: datetime | None
    crashes_in_a_row: int


@dataclass
class Reconciler:
    context: JobContext
    settings: WorkerSettings
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _health: dict[str, _Health] = field(default_factory=dict)
    # Quick crashes in a row per container (the backoff's k); forgotten when the worker restarts.
    _crashes: dict[str, int] = field(default_factory=dict)
    # When each orphan candidate (Docker id) was first seen, by the monotonic clock.
    _orphans: dict[str, float] = field(default_factory=dict)
    _limit: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECONCILE_CONCURRENCY))

    @property
    def store(self) -> WorkerContainerStore:
        return self.context.containers

    @property
    def stuck_after_seconds(self) -> float:
        return STUCK_AFTER_INTERVALS * self.settings.worker_reconcile_interval_seconds

    async def run_round(self) -> None:
        """Start tending every container of this host (those not already being tended) and sweep orphans."""
        rows = await self.store.on_host(self.settings.host_id)
        current = {str(row["id"]) for row in rows}
        for container_id in current:
            task = self._tasks.get(container_id)
            if task is None or task.done():
                self._tasks[container_id] = asyncio.create_task(self._tend_logged(container_id))
        for container_id in set(self._tasks) - current:
            if self._tasks[container_id].done():
                del self._tasks[container_id]
        for memory in (self._health, self._crashes):
            for container_id in set(memory) - current:
                memory.pop(container_id, None)
        await self.sweep_orphans()

    async def settle(self) -> None:
        """Wait until every container task of the rounds so far is done."""
        while pending := [task for task in self._tasks.values() if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_once(self) -> None:
        """One full round, waiting for its container tasks (what tests call)."""
        await self.run_round()
        await self.settle()

    async def close(self) -> None:
        """Stop tending (customer containers are left as they are)."""
        tasks = [task for task in self._tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # ------------------------------------------------------------------------------------ one container

    async def _tend_logged(self, container_id: str) -> None:
        try:
            await self._tend(container_id)
        except _PASSING_ERRORS as exc:
            log_event(logger, "reconciling a container failed; will retry", container_id=container_id, error=str(exc))
        except Exception:
            logger.exception("reconciling a container crashed", extra={"container_id": container_id})

    async def _tend(self, container_id: str) -> None:
        # The lock first: waiting for a job that holds it (a long health check) must not take a slot.
        async with container_lock(container_id), self._limit:
            planned = await self._inspect_and_act(container_id)
        if planned is None:
            return
        # Wait out the backoff without the lock: a stop or delete job may still come in meanwhile.
        await asyncio.sleep(max(0.0, (planned.due - datetime.now(UTC)).total_seconds()))
        async with container_lock(container_id), self._limit:
            await self._restart(container_id, planned)

    async def _inspect_and_act(self, container_id: str) -> _PlannedRestart | None:
        row = await self.store.get(container_id)
        if row is None or row["host_id"] != self.settings.host_id:
            return None
        docker_id, state = await find_container(self.context, row)
        action = decide(row, None if state is None else state.get("status"), self.stuck_after_seconds)
        if action is Action.CONVERGE:
            log_event(
                logger,
                "reconciler converging a container",
                container_id=container_id,
                desired=row["desired_state"],
                status=row["status"],
                docker_status=None if state is None else state.get("status"),
            )
            self._health.pop(container_id, None)
            await self._converge(container_id)
        elif action is Action.CRASHED and state is not None:
            self._health.pop(container_id, None)
            return await self._plan_restart(row, state)
        elif action is Action.CHECK_HEALTH:
            if self.context.networks is not None and docker_id is not None and on_legacy_network(state):
                state = await move_to_tenant_network(self.context, row, docker_id)
            await self._check_health(row, state)
        return None

    async def _converge(self, container_id: str) -> None:
        try:
            await converge_locked(self.context, container_id)
        except JobFailed as exc:
            # What would fail the job for good fails the container: trying every round cannot help.
            await self.store.fail(container_id, str(exc))
            log_event(logger, "reconciler could not converge a container", container_id=container_id, reason=str(exc))

    async def _plan_restart(self, row: dict[str, Any], state: dict[str, Any]) -> _PlannedRestart | None:
        """Record the exit; when the policy restarts it, say when (the caller waits, then restarts)."""
        container_id, exit_code = str(row["id"]), state.get("exit_code")
        reason = exit_reason(state)
        refusal = RestartPolicy.parse(row["restart_policy"]).refusal(exit_code, int(row["restart_count"] or 0))
        if refusal is not None:
            status = "failed" if exit_code != 0 else "stopped"
            if await self.store.record_exit(container_id, "running", exit_code, status, reason + refusal):
                log_event(logger, "container exited; not restarted", container_id=container_id, reason=reason + refusal)
            self._crashes.pop(container_id, None)
            return None
        started_at, finished_at = state.get("started_at"), state.get("finished_at")
        ran_for = (finished_at - started_at).total_seconds() if started_at and finished_at else 0.0
        crashes = (
            0 if ran_for >= self.settings.worker_restart_backoff_reset_seconds else self._crashes.get(container_id, 0)
        )
        delay = backoff_seconds(self.settings, crashes)
        restart_number = int(row["restart_count"] or 0) + 1
        waiting = f"{reason}; restarting in {delay:g} s (restart {restart_number})"
        recorded = await self.store.record_exit(container_id, "running", exit_code, "failed", waiting)
        if not recorded and row["status"] != "failed":
            return None  # the tenant's wish changed meanwhile
        log_event(logger, "container exited; restart planned", container_id=container_id, reason=waiting)
        due = (finished_at or datetime.now(UTC)) + timedelta(seconds=delay)
        return _PlannedRestart(due, finished_at, crashes)

    async def _restart(self, container_id: str, planned: _PlannedRestart) -> None:
        row = await self.store.get(container_id)
        if row is None or row["host_id"] != self.settings.host_id or row["desired_state"] != "running":
            return
        if row["status"] != "failed":
            return  # a job or the tenant acted during the backoff
        docker_id, state = await find_container(self.context, row)
        if state is not None and (
            state.get("status") not in ("exited", "dead") or state.get("finished_at") != planned.finished_at
        ):
            return  # started meanwhile (perhaps from outside Berth)
        number = int(row["restart_count"] or 0) + 1
        restarts = await self.store.record_restart(container_id, f"restart {number} after exit code {row['exit_code']}")
        if restarts is None:
            return
        self._crashes[container_id] = planned.crashes_in_a_row + 1
        log_event(logger, "container restarting", container_id=container_id, restart=restarts)
        if docker_id is None or state is None or state.get("status") == "dead":
            await self._converge(container_id)  # gone or unusable: made again
            return
        await self.context.runtime.start_container(docker_id)
        await settle_after_start(self.context, row, docker_id)

    async def _check_health(self, row: dict[str, Any], state: dict[str, Any] | None) -> None:
        container_id, status = str(row["id"]), row["status"]
        check = HealthCheck.of(row)
        if check is None:
            if status == "unhealthy":  # its health check was removed
                await self.store.set_status(container_id, "running", "running")
            return
        health = self._health.setdefault(container_id, _Health())
        now = time.monotonic()
        if now < health.next_check:
            return
        health.next_check = now + check.interval_seconds
        failure = await probe(check, container_address(state))
        if failure is None:
            health.failures = 0
            if status == "unhealthy" and await self.store.set_status(container_id, "running", "running"):
                log_event(logger, "container healthy again", container_id=container_id)
            return
        health.failures += 1
        if health.failures >= check.retries and status != "unhealthy":
            reason = f"health check failed {health.failures} times in a row: {failure}"
            if await self.store.set_status(container_id, "running", "unhealthy", reason):
                log_event(logger, "container unhealthy", container_id=container_id, reason=reason)

    # ------------------------------------------------------------------------------------ orphans

    async def sweep_orphans(self) -> list[str]:
        """Remove this cluster's containers nobody here tracks once seen for the grace period; returns the
        Docker ids removed."""
        labelled = await self.context.runtime.list_labelled_containers(CLUSTER_LABEL, self.settings.cluster_id)
        record_ids = [item["labels"].get(CONTAINER_ID_LABEL, "") for item in labelled]
        placements = await self.store.placements(record_ids)
        present = {item["id"] for item in labelled}
        now = time.monotonic()
        candidates: set[str] = set()
        removed: list[str] = []
        for item, record_id in zip(labelled, record_ids, strict=True):
            if self._orphan_reason(placements.get(record_id), item["id"], present) is None:
                continue
            candidates.add(item["id"])
            first_seen = self._orphans.setdefault(item["id"], now)
            if now - first_seen < self.settings.worker_orphan_grace_seconds:
                continue
            try:
                if await self._remove_orphan(record_id, item):
                    removed.append(item["id"])
            except _PASSING_ERRORS as exc:
                log_event(logger, "orphan removal failed; will retry", docker_id=item["id"], error=str(exc))
        self._orphans = {docker_id: seen for docker_id, seen in self._orphans.items() if docker_id in candidates}
        return removed

    def _orphan_reason(self, placement: dict[str, Any] | None, docker_id: str, present: set[str]) -> str | None:
        if placement is None:
            return "it has no record"
        if placement["status"] == "deleted":
            return "its record is deleted"
        if placement["host_id"] != self.settings.host_id:
            return f"its record is on host {placement['host_id']}"
        recorded = placement["docker_id"]
        if recorded and recorded != docker_id and recorded in present:
            return f"it duplicates the record's container {recorded[:12]}"
        return None

    async def _remove_orphan(self, record_id: str, item: dict[str, Any]) -> bool:
        # Under the record's lock, and looked at again: a job may have adopted it since it was first seen.
        async with container_lock(record_id):
            placements = await self.store.placements([record_id])
            present = {item["id"]}
            placement = placements.get(record_id)
            if placement is not None and placement["docker_id"]:
                state = await self.context.runtime.container_state(placement["docker_id"])
                if state is not None:
                    present.add(placement["docker_id"])
            why = self._orphan_reason(placement, item["id"], present)
            if why is None:
                return False
            removed = await self.context.runtime.remove_container(item["id"])
        self._orphans.pop(item["id"], None)
        log_event(logger, "orphan container removed", docker_id=item["id"], docker_name=item["name"], why=why)
        return removed


def reconciler_task(context: JobContext, settings: WorkerSettings) -> PeriodicTask:
    """Reconciling every ``worker_reconcile_interval_seconds``; when the loop ends, tending stops."""
    reconciler = Reconciler(context, settings)
    log_event(logger, "reconciler started", interval_seconds=settings.worker_reconcile_interval_seconds)
    return PeriodicTask(
        "reconcile round",
        settings.worker_reconcile_interval_seconds,
        reconciler.run_round,
        retry_on=_PASSING_ERRORS,
        close=reconciler.close,
    )
