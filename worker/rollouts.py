"""The rollout driver: moves every service's replicas toward its target release and declared count, one
step at a time, and writes each release's outcome.

Every host worker runs it (``worker_rollout_interval_seconds``); a service is advanced by one process at a
time, under a PostgreSQL advisory lock held for one step (a killed process loses its connection and with it
the lock). Nothing of a rollout lives in memory: each step reads the service, its target release and its
replicas (containers with ``service_id``) from PostgreSQL, decides with the pure ``plan_step``, and acts by
writing rows and queueing jobs, so a rollout resumes exactly where any killed process left it, and a step
repeated after a crash decides the same again (it counts the replicas that exist, never what it meant to do).

A step, for target release T, ``replicas`` N, ``max_surge`` S and ``max_unavailable`` U:

- T ``failed`` (its rollout stopped, auto_rollback off): nothing, until a deploy or rollback.
- While T rolls, a replica of T that is unhealthy, failed or stopped, or not ready ``healthy_deadline_seconds``
  after it was created, fails T: with ``auto_rollback`` the service goes back to the release T replaced (T
  reads ``rolled_back`` with the replica's reason, e.g. its health check's last output) and T's replicas become
  old ones, removed as below; without it T reads ``failed`` and everything stays as it is.
- A replica is *ready* once it has passed its health checks for ``min_healthy_seconds`` and is registered
  (passing) in the registry lb-runtime routes from.
- Old replicas (another release) that are broken are removed at once; ready ones (and excess replicas of T,
  when scaling down) only while at least N - U replicas stay ready; not-ready ones first.
- Replicas of T are created (through ``shared.container_placement``, the containers' own path) while T has
  fewer than N and all replicas together fewer than N + S.
- T is ``healthy`` once it has exactly N ready replicas and no other replica is left, leaving ones included.

Regions: a release may name regions with a minimum each (``config.regions``). A new replica of T goes to the
first region (in the declared order) where T has fewer live replicas pinned than its minimum, and is pinned
there (the container's ``region``: placed only on that region's hosts, and re-placed only there when its host
is lost, by worker/rescheduling.py as any container with a region); once every minimum is met, replicas are
not pinned (any region; when their host is lost, its region first, then any). A scale down removes unpinned
replicas before pinned ones. A region without a live host delays only its own replicas.

Removing a replica is a container delete: its host's worker takes it out of the registry, waits
``worker_stop_drain_seconds`` for traffic to move, then stops and removes it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.container_placement import place_container
from shared.errors import DependencyError, ServiceUnavailable
from shared.host_store import HostStore
from shared.jobs import HostJobQueues, Job, JobKind
from shared.observability import get_logger, log_event
from shared.registry import Namespace, ServiceRegistry
from worker.periodic import PeriodicTask
from worker.rollout_store import RolloutStore
from worker.settings import WorkerSettings

logger = get_logger("worker")

ROLLING = ("pending", "rolling")
BROKEN = ("unhealthy", "failed", "stopped")


@dataclass(frozen=True)
class Policy:
    max_surge: int = 1
    max_unavailable: int = 0
    min_healthy_seconds: float = 5.0
    healthy_deadline_seconds: float = 300.0
    auto_rollback: bool = True

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Policy:
        return cls(
            max_surge=int(raw.get("max_surge", 1)),
            max_unavailable=int(raw.get("max_unavailable", 0)),
            min_healthy_seconds=float(raw.get("min_healthy_seconds", 5)),
            healthy_deadline_seconds=float(raw.get("healthy_deadline_seconds", 300)),
            auto_rollback=bool(raw.get("auto_rollback", True)),
        )


@dataclass(frozen=True)
class Replica:
    id: str
    name: str
    release: int | None
    status: str
    desired_state: str
    reason: str | None
    age_seconds: float
    healthy_seconds: float | None  # how long it has been running (passing), None when it is not
    registered: bool  # passing in the registry
    region: str | None = None  # the region it is pinned to (placed for that region's minimum); None: any

    def ready(self, policy: Policy) -> bool:
        return (
            self.status == "running"
            and self.healthy_seconds is not None
            and self.healthy_seconds >= policy.min_healthy_seconds
            and self.registered
        )

    @property
    def broken(self) -> bool:
        return self.status in BROKEN

    def failure(self, policy: Policy) -> str | None:
        """Why this replica of a rolling release fails it; None while it may still become ready."""
        if self.broken:
            return self.reason or f"the replica is {self.status}"
        if not self.ready(policy) and self.age_seconds > policy.healthy_deadline_seconds:
            detail = f" ({self.status}: {self.reason})" if self.reason else f" ({self.status})"
            return f"not healthy within {policy.healthy_deadline_seconds:g} s{detail}"
        return None


@dataclass(frozen=True)
class Step:
    start: bool = False  # the release goes from pending to rolling
    create: int = 0
    remove: tuple[str, ...] = ()
    finish: str | None = None  # "healthy" or "failed"
    revert_to: int | None = None  # roll back to this release
    reason: str | None = None


def plan_step(
    target: int,
    status: str,
    replaces: int | None,
    wanted: int,
    policy: Policy,
    replicas: list[Replica],
    regions: Mapping[str, int] | None = None,
) -> Step:
    """The next step toward ``wanted`` ready replicas of release ``target`` (in ``status``), from the replicas
    there are now; ``regions`` (name -> minimum) keeps a scale down off the replicas pinned for a minimum.
    Pure: the same replicas always give the same step."""
    if status == "failed":
        return Step()
    start = status == "pending"
    rolling = status in ROLLING
    live = [replica for replica in replicas if replica.desired_state == "running"]
    leaving = [replica for replica in replicas if replica.desired_state == "deleted"]
    ours = [replica for replica in live if replica.release == target]
    others = [replica for replica in live if replica.release != target]

    if rolling:
        for replica in ours:
            why = replica.failure(policy)
            if why is None:
                continue
            reason = f"replica {replica.name}: {why}"
            if policy.auto_rollback and replaces is not None:
                # The failing replicas go now; the rest of the release's replicas become old ones, replaced
                # by the release rolled back to before they are removed.
                failing = tuple(r.id for r in ours if r.failure(policy) is not None)
                return Step(start=start, remove=failing, revert_to=replaces, reason=reason)
            return Step(start=start, finish="failed", reason=reason)

    remove = [replica.id for replica in others if replica.broken]
    others = [replica for replica in others if not replica.broken]
    available = sum(1 for replica in [*ours, *others] if replica.ready(policy))
    floor = max(wanted - policy.max_unavailable, 0)

    # Excess replicas of the target (a scale down): unpinned ones (or pinned above their region's minimum)
    # first; among those the not-ready first, then the newest.
    excess = len(ours) - wanted
    removed_ours = 0
    pinned = _pinned_counts(ours)
    minimums = regions or {}

    def needed(replica: Replica) -> bool:
        return replica.region is not None and pinned.get(replica.region, 0) <= minimums.get(replica.region, 0)

    for replica in sorted(ours, key=lambda r: (needed(r), r.ready(policy), r.age_seconds)):
        if excess <= 0:
            break
        if replica.ready(policy):
            if available - 1 < floor:
                break
            available -= 1
        remove.append(replica.id)
        removed_ours += 1
        excess -= 1
    # Old replicas: the not-ready first (they serve nothing), ready ones while enough stay ready.
    for replica in sorted(others, key=lambda r: (r.ready(policy), r.age_seconds)):
        if replica.ready(policy):
            if available - 1 < floor:
                break
            available -= 1
        remove.append(replica.id)

    live_after = len(live) - len(remove)
    ours_after = len(ours) - removed_ours
    create = max(0, min(wanted - ours_after, wanted + policy.max_surge - live_after))

    done = (
        rolling
        and not remove
        and not create
        and not others
        and not leaving
        and len(ours) == wanted
        and all(replica.ready(policy) for replica in ours)
    )
    return Step(start=start, create=create, remove=tuple(remove), finish="healthy" if done else None)


def _pinned_counts(replicas: list[Replica]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for replica in replicas:
        if replica.region is not None:
            counts[replica.region] = counts.get(replica.region, 0) + 1
    return counts


def placements(target: int, regions: Mapping[str, int], replicas: list[Replica], count: int) -> list[str | None]:
    """Where the next ``count`` replicas of release ``target`` go: the regions (in their order) short of their
    minimum of live replicas pinned there, each as often as it is short; then None (any region). Pure."""
    pinned = _pinned_counts(
        [replica for replica in replicas if replica.release == target and replica.desired_state == "running"]
    )
    chosen: list[str | None] = []
    for name, minimum in regions.items():
        chosen += [name] * max(0, minimum - pinned.get(name, 0))
    chosen = chosen[:count]
    return chosen + [None] * (count - len(chosen))


@dataclass
class RolloutDriver:
    store: RolloutStore
    hosts: HostStore
    queue: HostJobQueues
    settings: WorkerSettings
    registry: ServiceRegistry | None = None
    _warned: set[str] = field(default_factory=set)

    async def run_round(self) -> None:
        """One step for every service this process can claim."""
        for service_id in await self.store.service_ids():
            try:
                await self.advance(service_id)
            except (DependencyError, ServiceUnavailable, OSError) as exc:
                log_event(logger, "rollout step failed; will retry", service_id=service_id, error=str(exc))

    async def advance(self, service_id: str) -> Step | None:
        """One step of one service, under its lock; None when another process holds it or it is gone."""
        async with self.store.claimed(service_id) as claimed:
            if not claimed:
                return None
            service = await self.store.service(service_id)
            if service is None:
                return None
            rows = await self.store.replicas(service_id)
            registered = await self._registered(service, rows)
            replicas = [
                Replica(
                    id=str(row["id"]),
                    name=row["name"],
                    release=row["release_number"],
                    status=row["status"],
                    desired_state=row["desired_state"],
                    reason=row["reason"],
                    age_seconds=float(row["age_seconds"] or 0),
                    healthy_seconds=row["healthy_seconds"],
                    registered=registered is None or str(row["id"]) in registered,
                    region=row.get("region"),
                )
                for row in rows
            ]
            target = int(service["release_number"])
            regions = {region["name"]: int(region["min"]) for region in service["config"].get("regions") or []}
            step = plan_step(
                target,
                service["release_status"],
                service["replaces"],
                int(service["replicas"]),
                Policy.of(service["update_policy"]),
                replicas,
                regions,
            )
            await self._apply(service, step, placements(target, regions, replicas, step.create))
            return step

    async def _registered(self, service: dict[str, Any], rows: list[dict[str, Any]]) -> set[str] | None:
        """The ids of the service's passing instances in the registry (None: no registry to ask)."""
        if self.registry is None or not any(row["status"] == "running" for row in rows):
            return None if self.registry is None else set()
        instances = await self.registry.instances(
            Namespace.CLIENT_CONTAINERS, service["name"], uuid.UUID(str(service["owner_id"])), passing_only=True
        )
        return {instance.id for instance in instances}

    async def _apply(self, service: dict[str, Any], step: Step, regions: list[str | None]) -> None:
        service_id, target = str(service["id"]), int(service["release_number"])
        if step.start:
            await self.store.start_release(service_id, target)
            log_event(logger, "release rolling", service_id=service_id, release=target)
        for container_id in step.remove:
            await self._remove(container_id)
        if step.revert_to is not None:
            if await self.store.revert(service_id, target, step.revert_to, step.reason or "rolled back"):
                log_event(
                    logger,
                    "release rolled back",
                    service_id=service_id,
                    release=target,
                    to=step.revert_to,
                    reason=step.reason,
                )
            return
        if step.finish == "failed":
            await self.store.finish_release(service_id, target, "failed", step.reason)
            log_event(logger, "release failed", service_id=service_id, release=target, reason=step.reason)
            return
        if step.create:
            if not await self.store.image_ready(str(service["image_id"])):
                if service["release_status"] in ROLLING:
                    await self.store.finish_release(
                        service_id, target, "failed", "its image is no longer ready (deleted?)"
                    )
                return
            unavailable: set[str | None] = set()
            for region in regions:
                if region in unavailable:
                    continue
                try:
                    await self._create(service, region)
                except ServiceUnavailable as exc:
                    # No live host there: that region's replicas wait for the next round, the others go on.
                    unavailable.add(region)
                    log_event(logger, "replica not placed; will retry", service_id=service_id, error=exc.message)
        if step.finish == "healthy" and await self.store.finish_release(service_id, target, "healthy", None):
            log_event(logger, "release healthy", service_id=service_id, release=target)

    async def _create(self, service: dict[str, Any], region: str | None = None) -> None:
        ports = [
            {"container_port": port["container_port"], "protocol": port.get("protocol", "tcp")}
            for port in service["config"]["ports"]
        ]
        name = f"{service['name'][:48]}-{service['release_number']}-{secrets.token_hex(3)}"

        async def insert(container_id: uuid.UUID, host_id: str, placed: list[dict[str, Any]]) -> dict[str, Any] | None:
            return await self.store.insert_replica(container_id, service, name, host_id, placed, region)

        row = await place_container(self.hosts, self.queue, self.settings, ports, insert, region=region)
        if row is not None:
            log_event(
                logger,
                "replica created",
                service_id=str(service["id"]),
                release=service["release_number"],
                container_id=str(row["id"]),
                host_id=row["host_id"],
                region=region,
            )

    async def _remove(self, container_id: str) -> None:
        row = await self.store.remove_replica(container_id)
        if row is not None and row["host_id"] is not None:
            await self.queue.send(row["host_id"], Job(JobKind.RECONCILE_CONTAINER, {"container_id": container_id}))
            log_event(logger, "replica removing", container_id=container_id, host_id=row["host_id"])


def rollout_task(driver: RolloutDriver) -> PeriodicTask:
    """A step for every service every ``worker_rollout_interval_seconds``."""
    return PeriodicTask(
        "rollout round",
        driver.settings.worker_rollout_interval_seconds,
        driver.run_round,
        retry_on=(DependencyError, ServiceUnavailable, OSError),
    )
