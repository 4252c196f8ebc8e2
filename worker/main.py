"""The host worker: long-polls the job queue and runs jobs with bounded concurrency.

Life: start -> poll loop -> drain. Each job runs under a semaphore (``worker_concurrency``), its
message kept invisible to other workers while it runs. A message is deleted only when its job succeeded
or failed for good; a retryable failure leaves it to come back after the visibility timeout, and a
message that cannot be decoded is never deleted, so SQS moves it to the dead-letter queue after its
``maxReceiveCount``. The first SIGTERM stops polling and lets jobs in flight finish; a second one exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from shared.container_runtime import DockerRuntime, RuntimeFinal, RuntimeRetryable
from shared.db import get_database
from shared.errors import DependencyError
from shared.host_store import HostStore
from shared.jobs import JobQueue, ReceivedJob, get_job_queue
from shared.observability import get_logger, log_event
from shared.storage import get_object_store
from worker.container_jobs import fail_container, reconcile_container
from worker.container_store import WorkerContainerStore
from worker.hosts import heartbeat, mark_stale_hosts_down, register_this_host
from worker.image_jobs import (
    ImageJobContext,
    JobFailed,
    JobRetry,
    collect_orphan_images,
    delete_image,
    fail_image,
    process_image,
    remove_stale_scratch,
)
from worker.settings import WorkerSettings
from worker.stats import run_sampler
from worker.stats_store import StatsStore
from worker.store import WorkerImageStore

logger = get_logger("worker")

Handler = Callable[[ImageJobContext, dict[str, Any]], Awaitable[None]]
FailureHandler = Callable[[ImageJobContext, dict[str, Any], str], Awaitable[None]]

HANDLERS: dict[str, tuple[Handler, FailureHandler | None]] = {
    "image.process": (process_image, fail_image),
    "image.delete": (delete_image, None),
    "container.reconcile": (reconcile_container, fail_container),
}


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        queue: JobQueue,
        context: ImageJobContext,
        hosts: HostStore | None = None,
        stats: StatsStore | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.context = context
        self.hosts = hosts
        self.stats = stats
        self.id = uuid.uuid4().hex[:12]
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.completed = 0

    def stop(self) -> None:
        """Stop taking new jobs; jobs in flight finish."""
        self._stopping.set()

    async def run(self, *, burst: bool = False) -> None:
        """Poll until stopped (or, in burst mode, until the queue is empty), then drain."""
        remove_stale_scratch(self.settings)
        log_event(logger, "worker started", worker_id=self.id, concurrency=self.settings.worker_concurrency)
        housekeeping = asyncio.create_task(self._housekeeping())
        host_heartbeats = asyncio.create_task(self._host_heartbeats()) if self.hosts is not None else None
        stats_sampler = (
            asyncio.create_task(run_sampler(self.stats, self.context.runtime, self.settings, self._stopping))
            if self.stats is not None
            else None
        )
        try:
            while not self._stopping.is_set():
                free = await self._wait_for_slot()
                if self._stopping.is_set():
                    break
                try:
                    batch = await self.queue.receive(free, self.settings.worker_wait_seconds)
                except DependencyError as exc:
                    log_event(logger, "queue unavailable; retrying", error=str(exc))
                    await self._sleep(2.0)
                    continue
                if not batch and burst and not self._running:
                    break
                for received in batch:
                    task = asyncio.create_task(self._run_one(received))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
        finally:
            housekeeping.cancel()
            if host_heartbeats is not None:
                host_heartbeats.cancel()
            if stats_sampler is not None:
                stats_sampler.cancel()
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
            log_event(logger, "worker stopped", worker_id=self.id, completed=self.completed)

    async def _housekeeping(self) -> None:
        """Periodic repairs that no job asks for: images whose delete job was lost."""
        while not self._stopping.is_set():
            try:
                await collect_orphan_images(self.context)
            except (DependencyError, RuntimeRetryable, RuntimeFinal) as exc:
                log_event(logger, "housekeeping failed; will retry", error=str(exc))
            await self._sleep(self.settings.worker_gc_interval_seconds)

    async def _host_heartbeats(self) -> None:
        """Register this host, keep it alive every ``host_heartbeat_seconds``, and mark hosts that fell
        silent for ``host_down_after_seconds`` as down. Registration is retried until it succeeds."""
        assert self.hosts is not None
        registered = False
        while not self._stopping.is_set():
            try:
                # An unknown host (first start, or its row was removed) is registered again.
                if not registered or not await heartbeat(self.hosts, self.settings.host_id):
                    host = await register_this_host(self.hosts, self.settings)
                    registered = True
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
            except DependencyError as exc:
                log_event(logger, "host heartbeat failed; will retry", error=str(exc))
            await self._sleep(self.settings.host_heartbeat_seconds)

    async def _wait_for_slot(self) -> int:
        """Wait until fewer than ``worker_concurrency`` jobs run; returns how many more may start."""
        if len(self._running) >= self.settings.worker_concurrency:
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
        return max(1, self.settings.worker_concurrency - len(self._running))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _keep_invisible(self, received: ReceivedJob) -> None:
        interval = max(5, self.settings.worker_visibility_seconds // 2)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(DependencyError):
                await self.queue.extend(received, self.settings.worker_visibility_seconds)

    async def _run_one(self, received: ReceivedJob) -> None:
        heartbeat = asyncio.create_task(self._keep_invisible(received))
        try:
            outcome = await self._execute(received)
            if outcome != "retry":
                await self.queue.delete(received)
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
        try:
            await asyncio.wait_for(handler(self.context, job.payload), self.settings.worker_job_timeout_seconds)
            log_event(logger, "job done", job_id=job.id, kind=job.kind)
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
    context = ImageJobContext(
        settings=settings,
        images=WorkerImageStore(database),
        objects=get_object_store(settings),
        runtime=DockerRuntime(settings.docker_host, settings.docker_timeout_seconds),
        containers=WorkerContainerStore(database),
        hosts=HostStore(database),
    )
    return Worker(settings, get_job_queue(settings), context, context.hosts, StatsStore(database))


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
