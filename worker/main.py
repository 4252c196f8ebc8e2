"""The host worker: long-polls its host's job queue and the shared one; runs jobs with bounded concurrency.

Life: start -> poll loops -> drain. Container jobs come from the queue of this host's own (created before
the host registers, so a host the scheduler can see has one); image jobs from the queue all hosts share.
One poll loop per queue; both share the ``worker_concurrency`` slots, a loop polling only while a slot
is free. Each job runs in a slot, its message kept invisible to other workers while it runs. A message
is deleted only when its job succeeded or failed for good; a retryable failure leaves it to come back
after a backoff (2, 4, 8 s ...), and a message that cannot be decoded is never deleted, so SQS moves it to
the dead-letter queue after its ``maxReceiveCount``. The first SIGTERM stops polling both queues and lets
jobs in flight finish; a second one exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shared.db import Database, get_database
from shared.errors import DependencyError
from shared.host_store import HostStore
from shared.jobs import (
    HostJobQueues,
    Job,
    JobKind,
    JobQueue,
    ReceivedJob,
    SqsHostJobQueues,
    get_job_queue,
    open_host_job_queue,
)
from shared.observability import get_logger, log_event
from shared.registry import RegistrySettings, get_registry
from shared.request_trail import RequestTrailStore, job_trail
from shared.storage import get_object_store
from worker.admin import WorkerMetrics
from worker.alert_store import AlertStore
from worker.alerts import alert_tasks
from worker.container_jobs import fail_container, reconcile_container
from worker.container_runtime import DockerRuntime, RuntimeFinal, RuntimeRetryable
from worker.container_store import WorkerContainerStore
from worker.context import JobContext
from worker.hosts import heartbeat, mark_stale_hosts_down, register_this_host
from worker.image_jobs import (
    JobFailed,
    JobRetry,
    collect_orphan_images,
    delete_image,
    fail_image,
    process_image,
    remove_stale_scratch,
)
from worker.log_shipper import log_shipper_task
from worker.log_store import LogStore
from worker.metering import invoicing_task, metering_task
from worker.metering_store import MeteringStore
from worker.periodic import PeriodicTask, run_periodic
from worker.private_networking import PrivateNetworking
from worker.reconciler import reconciler_task
from worker.registration import RegistrationStore, RegistrySync, registry_sync_task
from worker.request_trails import request_trail_retention_task
from worker.rescheduling import reschedule_containers_of_down_hosts
from worker.rollout_store import RolloutStore
from worker.rollouts import RolloutDriver, rollout_task
from worker.settings import WorkerSettings
from worker.stats import sampler_task
from worker.stats_store import StatsStore
from worker.store import WorkerImageStore
from worker.traffic_recorder import traffic_recorder_task
from worker.traffic_store import TrafficStore

logger = get_logger("worker")

Handler = Callable[[JobContext, dict[str, Any]], Awaitable[None]]
FailureHandler = Callable[[JobContext, dict[str, Any], str], Awaitable[None]]

HANDLERS: dict[str, tuple[Handler, FailureHandler | None]] = {
    JobKind.PROCESS_IMAGE: (process_image, fail_image),
    JobKind.DELETE_IMAGE: (delete_image, None),
    JobKind.RECONCILE_CONTAINER: (reconcile_container, fail_container),
}


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        queue: JobQueue,
        context: JobContext,
        hosts: HostStore | None = None,
        stats: StatsStore | None = None,
        host_queues: HostJobQueues | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue  # shared by every host: image jobs
        # This host's own queue (container jobs): opened by the heartbeat loop before the host registers.
        self.host_queue: JobQueue | None = None
        self.context = context
        self.hosts = hosts
        self.stats = stats
        # Where rescheduled containers' jobs go: the queues of other hosts.
        self.host_queues = host_queues if host_queues is not None else SqsHostJobQueues(settings)
        self.id = uuid.uuid4().hex[:12]
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._stopping = asyncio.Event()
        self._host_queue_ready = asyncio.Event()
        self._host_registered = False
        self.completed = 0
        self.metrics = WorkerMetrics()
        # Tenant networks, firewall and internal DNS (worker.private_networking); None in some tests.
        self.private: PrivateNetworking | None = None
        # Services' rolling deploys and replica counts (worker.rollouts); None in some tests.
        self.rollouts: RolloutDriver | None = None
        # Metering and invoice finalization (worker.metering): the database they use; None in some tests.
        self.billing_database: Database | None = None
        # Alert evaluation and delivery (worker.alerts), listener traffic history (worker.traffic_recorder).
        self.alerts: AlertStore | None = None
        self.traffic: TrafficStore | None = None
        # Where jobs' log lines go as their callers' request trails, and their retention; None in some tests.
        self.trails: RequestTrailStore | None = None

    @property
    def stopping(self) -> asyncio.Event:
        """Set once the worker stops: its poll loops and periodic tasks end."""
        return self._stopping

    def stop(self) -> None:
        """Stop taking new jobs; jobs in flight finish."""
        self._stopping.set()

    async def run(self, *, burst: bool = False) -> None:
        """Poll until stopped (or, in burst mode, until the queues are empty), then drain."""
        remove_stale_scratch(self.settings)
        if self.private is not None:
            await self.private.start()  # before any job: no tenant container may reach the host
        admin_port = self.metrics.serve(self.settings)
        if admin_port is not None and self.context.registry_sync is not None:
            self.context.registry_sync.announce_worker(self.settings.worker_admin_address, admin_port)
        log_event(
            logger,
            "worker started",
            worker_id=self.id,
            concurrency=self.settings.worker_concurrency,
            metrics_port=admin_port,
        )
        background = [asyncio.create_task(run_periodic(task, self._stopping)) for task in self.periodic_tasks()]
        try:
            polls = [self._poll("shared", self.queue, burst=burst)]
            if self.hosts is not None:
                polls.append(self._poll_host_queue(burst=burst))
            await asyncio.gather(*polls)
        finally:
            for task in background:
                task.cancel()
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
            if self.context.registry_sync is not None:
                # Its containers stay registered (they keep running); the worker itself leaves.
                with contextlib.suppress(DependencyError, OSError):
                    await self.context.registry_sync.withdraw_self()
            log_event(logger, "worker stopped", worker_id=self.id, completed=self.completed)

    async def _poll(self, name: str, queue: JobQueue, *, burst: bool) -> None:
        """Receive from ``queue`` while a slot is free and start each job; until stopped (or, in burst
        mode, until the queue is empty and no job runs)."""
        while not self._stopping.is_set():
            free = await self._wait_for_slot()
            if self._stopping.is_set():
                break
            try:
                batch = await queue.receive(
                    free, self.settings.worker_wait_seconds, self.settings.worker_visibility_seconds
                )
            except DependencyError as exc:
                log_event(logger, "queue unavailable; retrying", queue=name, error=str(exc))
                await self._sleep(2.0)
                continue
            if not batch and burst and not self._running:
                break
            if self._stopping.is_set():
                # A stop came while this receive waited: hand the batch back to other workers at once.
                for received in batch:
                    with contextlib.suppress(DependencyError):
                        await queue.extend(received, 0)
                break
            for received in batch:
                task = asyncio.create_task(self._run_one(queue, received))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _poll_host_queue(self, *, burst: bool) -> None:
        """Poll this host's queue once the heartbeat loop has opened it."""
        stopping = asyncio.create_task(self._stopping.wait())
        ready = asyncio.create_task(self._host_queue_ready.wait())
        await asyncio.wait({stopping, ready}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        ready.cancel()
        if self.host_queue is not None:
            await self._poll("host", self.host_queue, burst=burst)

    async def _open_host_queue(self) -> None:
        """Create (or update) this host's queue and start polling it."""
        self.host_queue = await asyncio.to_thread(
            open_host_job_queue, self.settings, self.settings.host_id, self.settings.worker_visibility_seconds
        )
        self._host_queue_ready.set()

    def periodic_tasks(self) -> list[PeriodicTask]:
        """What runs beside the poll loops until the worker stops, each in a loop of its own."""
        tasks = [
            PeriodicTask(
                "housekeeping",
                self.settings.worker_gc_interval_seconds,
                functools.partial(collect_orphan_images, self.context),
                retry_on=(DependencyError, RuntimeRetryable, RuntimeFinal),
            ),
            reconciler_task(self.context, self.settings),
        ]
        if self.hosts is not None:
            tasks.append(self.host_heartbeat_task())
            if self.rollouts is not None:
                tasks.append(rollout_task(self.rollouts))
        if self.stats is not None:
            tasks.append(sampler_task(self.stats, self.context.runtime, self.settings))
        if self.context.logs is not None:
            tasks.append(log_shipper_task(self.context.logs, self.context.runtime, self.settings))
        if self.context.registry_sync is not None:
            tasks.append(registry_sync_task(self.context.registry_sync))
        if self.private is not None:
            tasks.append(self.private.periodic_task())
        if self.billing_database is not None:
            metering = MeteringStore(self.billing_database)
            tasks.append(metering_task(metering, self.settings))
            tasks.append(invoicing_task(self.billing_database, metering, self.settings))
        if self.alerts is not None:
            tasks.extend(alert_tasks(self.alerts, self.settings))
        if self.traffic is not None and self.settings.worker_traffic_recording:
            tasks.append(traffic_recorder_task(self.traffic, self.settings))
        if self.trails is not None:
            tasks.append(request_trail_retention_task(self.trails, self.settings))
        return tasks

    def host_heartbeat_task(self) -> PeriodicTask:
        """The host's heartbeat every ``host_heartbeat_seconds`` (see ``_host_heartbeat_round``)."""
        return PeriodicTask(
            "host heartbeat",
            self.settings.host_heartbeat_seconds,
            self._host_heartbeat_round,
            retry_on=(DependencyError,),
        )

    async def _host_heartbeat_round(self) -> None:
        """Open this host's queue, register the host or keep it alive, mark hosts that fell silent for
        ``host_down_after_seconds`` as down and move their containers to live hosts (worker.rescheduling).
        A step that fails is retried next round; the host registers only once its queue exists."""
        assert self.hosts is not None
        # An unknown host (first start, or its row was removed) is registered again.
        if not self._host_registered or not await heartbeat(self.hosts, self.settings.host_id):
            if self.host_queue is None:
                await self._open_host_queue()
            host = await register_this_host(self.hosts, self.settings)
            self._host_registered = True
            log_event(
                logger,
                "host registered",
                host_id=host.id,
                address=host.address,
                status=host.status,
                cpu=host.cpu_capacity,
                memory_mb=host.memory_capacity_mb,
            )
        for host_id in await mark_stale_hosts_down(self.hosts, self.settings.host_down_after_seconds):
            log_event(
                logger,
                "host marked down: no heartbeat",
                host_id=host_id,
                silent_for_seconds=self.settings.host_down_after_seconds,
            )
        # Every round, not only when a host was just marked down: lost containers that found no live host
        # last time try again.
        registry = self.context.registry_sync.registry if self.context.registry_sync is not None else None
        await reschedule_containers_of_down_hosts(self.hosts, self.host_queues, self.settings, registry)

    async def _wait_for_slot(self) -> int:
        """Wait until fewer than ``worker_concurrency`` jobs run (or a stop); how many more may start.

        Both poll loops may see the same free slots and receive at once; a job received beyond the
        limit waits for a slot (its message kept invisible), so at most ``worker_concurrency`` run."""
        while len(self._running) >= self.settings.worker_concurrency and not self._stopping.is_set():
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({*self._running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        return max(1, self.settings.worker_concurrency - len(self._running))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _keep_invisible(self, queue: JobQueue, received: ReceivedJob) -> None:
        interval = max(5, self.settings.worker_visibility_seconds // 2)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(DependencyError):
                await queue.extend(received, self.settings.worker_visibility_seconds)

    async def _run_one(self, queue: JobQueue, received: ReceivedJob) -> None:
        heartbeat = asyncio.create_task(self._keep_invisible(queue, received))
        kind = received.job.kind if received.job is not None and received.job.kind in HANDLERS else "unknown"
        try:
            async with self._slots:
                with self.metrics.running.track_inprogress():
                    outcome = await self._execute(received)
            self.metrics.jobs.labels(kind, outcome).inc()
            if outcome == "retry":
                # Back off (2, 4, 8 s ... up to the visibility timeout) rather than wait out the whole timeout.
                backoff = min(2**received.receive_count, self.settings.worker_visibility_seconds)
                await queue.extend(received, backoff)
            else:
                await queue.delete(received)
                self.completed += 1
        except DependencyError as exc:
            log_event(logger, "could not acknowledge job", error=str(exc))
        finally:
            heartbeat.cancel()

    async def _execute(self, received: ReceivedJob) -> str:
        """Run the job; 'done', 'failed' (for good) or 'retry' (leave the message to come back)."""
        job = received.job
        if job is None or job.kind not in HANDLERS:
            # Poisoned: leave it; after maxReceiveCount deliveries SQS moves it to the dead-letter queue.
            log_event(
                logger, "undeliverable message", kind=getattr(job, "kind", None), receive_count=received.receive_count
            )
            return "retry"
        handler, on_failure = HANDLERS[job.kind]
        started = time.monotonic()
        # The request that caused the job and its caller (shared.jobs carries them): on every log line the job
        # writes, and those lines kept in the caller's request trail (shared.request_trail).
        async with job_trail(self.trails, job.request_id, job.owner_id, f"job-{job.id}"):
            return await self._execute_job(job, handler, on_failure, received, started)

    async def _execute_job(
        self, job: Job, handler: Handler, on_failure: FailureHandler | None, received: ReceivedJob, started: float
    ) -> str:
        try:
            await asyncio.wait_for(handler(self.context, job.payload), self.settings.worker_job_timeout_seconds)
            log_event(logger, "job done", job_id=job.id, kind=job.kind, seconds=round(time.monotonic() - started, 3))
            return "done"
        except (JobFailed, RuntimeFinal) as exc:
            reason = str(exc)
        except (JobRetry, RuntimeRetryable, DependencyError, TimeoutError) as exc:
            if received.receive_count < self.settings.worker_max_tries:
                log_event(
                    logger,
                    "job will retry",
                    job_id=job.id,
                    kind=job.kind,
                    error=str(exc) or "timeout",
                    attempt=received.receive_count,
                )
                return "retry"
            reason = f"gave up after {received.receive_count} attempts: {exc or 'timed out'}"
        except Exception as exc:
            logger.exception("job crashed", extra={"job_id": job.id, "kind": job.kind})
            if received.receive_count < self.settings.worker_max_tries:
                return "retry"
            reason = f"internal error after {received.receive_count} attempts ({type(exc).__name__})"
        log_event(logger, "job failed", job_id=job.id, kind=job.kind, reason=reason)
        if on_failure is not None:
            with contextlib.suppress(DependencyError):
                await on_failure(self.context, job.payload, reason)
        return "failed"


def build_worker(settings: WorkerSettings) -> Worker:
    database = get_database(settings.database_url, settings.database_pool_max)
    registry = get_registry(RegistrySettings())
    private = PrivateNetworking.build(settings, registry)
    context = JobContext(
        settings=settings,
        images=WorkerImageStore(database),
        objects=get_object_store(settings),
        runtime=DockerRuntime(settings.docker_host, settings.docker_timeout_seconds),
        containers=WorkerContainerStore(database),
        hosts=HostStore(database),
        logs=LogStore(database),
        registry_sync=RegistrySync(registry, RegistrationStore(database), settings),
        networks=private.networks,
        stats=StatsStore(database),
    )
    worker = Worker(settings, get_job_queue(settings), context, context.hosts, context.stats)
    worker.private = private
    worker.rollouts = RolloutDriver(RolloutStore(database), context.hosts, worker.host_queues, settings, registry)
    worker.billing_database = database
    worker.alerts = AlertStore(database)
    worker.traffic = TrafficStore(database)
    worker.trails = RequestTrailStore(database)
    return worker


async def serve(settings: WorkerSettings, *, burst: bool = False) -> int:
    worker = build_worker(settings)
    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal() -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            raise SystemExit(1)
        log_event(logger, "shutting down: finishing jobs in flight", worker_id=worker.id)
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await worker.run(burst=burst)
    return 0
