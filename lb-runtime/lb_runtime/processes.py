"""lb-runtime on several cores (``--processes N``): one supervisor, N workers sharing every listener port.

The contract between the processes:

- The **supervisor** (the process started) polls the snapshot source and validates each snapshot, runs the
  health checks (once per instance, whatever N is), owns the admin port and the registry announcement. It
  binds no listener.
- Each **worker** (``python -m lb_runtime --worker-fd FD``) binds every listener with SO_REUSEPORT (the kernel
  spreads new connections over the workers) and serves traffic exactly like a single process.
- They talk over one Unix socket pair per worker, in JSON lines. Supervisor to worker: ``{"snapshot": {...}}``
  (always the full snapshot), ``{"health": {listener: {instance: bool}}}`` (every checked instance, after
  each change), ``{"report": n}``. Worker to supervisor: ``{"applied": version}`` after each snapshot and
  ``{"report": n, "figures": [...]}`` (``stats.listener_figures`` of each listener). /metrics and /stats
  ask every worker and sum the answers (``stats.merge_figures``); a worker that does not answer within
  ``REPORT_TIMEOUT_SECONDS`` is left out of that answer.
- Passive ejection (a failed connect) stays each worker's own: it is what that worker saw.
- SIGTERM to the supervisor is passed to every worker, each drains like a single process, and the supervisor
  exits once all have; a second signal is passed on too (the workers exit at once). A worker that dies
  otherwise is restarted with the current snapshot and health. A worker whose supervisor is gone drains and
  exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from typing import Any

from lb_runtime.runtime import LbRuntime
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import SnapshotSource, StaticSnapshotSource
from lb_runtime.stats import merge_figures
from shared.observability import log_event

REPORT_TIMEOUT_SECONDS = 2.0
READY_TIMEOUT_SECONDS = 30.0
MAX_MESSAGE = 64 * 1024 * 1024


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


class _Worker:
    """The supervisor's handle on one worker process."""

    def __init__(self, index: int, process: asyncio.subprocess.Process, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.process = process
        self.writer = writer
        self.reports: dict[int, asyncio.Future[list[dict[str, Any]]]] = {}
        self.applied = asyncio.Event()
        self.reader_task: asyncio.Task[None] | None = None


class Supervisor:
    """Runs N worker processes and the parts of lb-runtime that must run once: polling, health, admin."""

    def __init__(self, settings: LbSettings, source: SnapshotSource) -> None:
        self.settings = settings
        self.runtime = LbRuntime(settings, source, role="supervisor")
        self.runtime.on_snapshot = self._snapshot_applied
        self.runtime.on_health_change = lambda listener, instance, healthy: self._share_health()
        self.runtime.figures = lambda: self._figures
        self.runtime.admin.refresh = self.gather_figures
        self.runtime.worker_pids = self.worker_pids
        self.logger = self.runtime.logger
        self.snapshot: dict[str, Any] | None = None
        self.workers: list[_Worker | None] = [None] * settings.processes
        self.stopping = False
        self._figures: list[dict[str, Any]] = []
        self._report_id = 0
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def admin_port(self) -> int | None:
        return self.runtime.admin_port

    async def start(self) -> None:
        """Load the first snapshot, start the workers and wait until each has bound it."""
        await self.runtime.start()
        await asyncio.gather(*(self._spawn(index) for index in range(self.settings.processes)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await asyncio.gather(*(worker.applied.wait() for worker in self.workers if worker is not None))
        log_event(
            self.logger,
            "lb-runtime workers started",
            processes=self.settings.processes,
            pids=[worker.process.pid for worker in self.workers if worker is not None],
        )

    async def stop(self, *, force: bool = False) -> None:
        """Pass SIGTERM on (twice with ``force``), wait for every worker to drain and exit, then stop."""
        self.stopping = True
        workers = [worker for worker in self.workers if worker is not None]
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
                if force:
                    worker.process.send_signal(signal.SIGTERM)
        deadline = self.settings.drain_timeout_seconds + 10
        for worker in workers:
            try:
                async with asyncio.timeout(deadline):
                    await worker.process.wait()
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
        await self.runtime.stop()

    def force_stop(self) -> None:
        """A second signal: the workers stop waiting for in-flight work too."""
        for worker in self.workers:
            if worker is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)

    def worker_pids(self) -> list[int]:
        """The workers serving (they have applied the current snapshot), for /healthz."""
        return [worker.process.pid for worker in self.workers if worker is not None and worker.applied.is_set()]

    # --- workers -----------------------------------------------------------------------------------------

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lb_runtime",
                "--worker-fd",
                str(theirs.fileno()),
                "--worker-settings",
                self.settings.model_dump_json(),
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only; it passes SIGTERM on
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=MAX_MESSAGE)
        worker = _Worker(index, process, writer)
        self.workers[index] = worker
        worker.reader_task = asyncio.get_running_loop().create_task(self._read(worker, reader))
        if self.snapshot is not None:
            await _send(writer, {"snapshot": self.snapshot})
            await _send(writer, {"health": self.runtime.health_verdicts()})

    async def _read(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while line := await reader.readline():
                message = json.loads(line)
                if "report" in message:
                    future = worker.reports.pop(message["report"], None)
                    if future is not None and not future.done():
                        future.set_result(message["figures"])
                elif "applied" in message:
                    worker.applied.set()
        await worker.process.wait()
        if self.stopping or self.workers[worker.index] is not worker:
            return
        self.logger.warning(
            "lb-runtime worker exited, restarting it",
            extra={"pid": worker.process.pid, "returncode": worker.process.returncode},
        )
        self.workers[worker.index] = None
        await asyncio.sleep(0.5)  # a worker that cannot start must not spin
        if not self.stopping:
            await self._spawn(worker.index)

    def _broadcast(self, message: dict[str, Any]) -> None:
        for worker in self.workers:
            if worker is not None and not worker.writer.is_closing():
                task = asyncio.get_running_loop().create_task(self._send_quietly(worker, message))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    @staticmethod
    async def _send_quietly(worker: _Worker, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError):
            await _send(worker.writer, message)

    def _snapshot_applied(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot
        self._broadcast({"snapshot": snapshot})
        self._share_health()

    def _share_health(self) -> None:
        self._broadcast({"health": self.runtime.health_verdicts()})

    async def gather_figures(self) -> None:
        """Ask every worker for its figures and keep their per-listener sums for /metrics and /stats."""
        self._report_id += 1
        report_id = self._report_id
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[list[dict[str, Any]]]] = []
        for worker in self.workers:
            if worker is None or worker.writer.is_closing():
                continue
            future: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
            worker.reports[report_id] = future
            with contextlib.suppress(ConnectionError):
                await _send(worker.writer, {"report": report_id})
                pending.append(future)
        done, late = await asyncio.wait(pending, timeout=REPORT_TIMEOUT_SECONDS) if pending else (set(), set())
        for future in late:
            future.cancel()
        by_listener: dict[str, list[dict[str, Any]]] = {}
        for future in done:
            for figures in future.result():
                by_listener.setdefault(figures["id"], []).append(figures)
        # The supervisor's table decides which listeners exist (a worker may still drain a removed one).
        self._figures = [
            merge_figures(by_listener[listener_id])
            for listener_id in (*self.runtime.listeners, *self.runtime.routes)
            if listener_id in by_listener
        ]


async def serve_worker(settings: LbSettings, channel_fd: int, stop: asyncio.Event) -> None:
    """A worker: serve what the supervisor sends until ``stop`` is set or the supervisor is gone, then drain."""
    source = StaticSnapshotSource()
    runtime = LbRuntime(settings, source, role="worker")
    await runtime.start()
    sock = socket.socket(fileno=channel_fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_MESSAGE)
    reading = asyncio.get_running_loop().create_task(_follow_supervisor(runtime, source, reader, writer))
    stopped = asyncio.get_running_loop().create_task(stop.wait())
    await asyncio.wait({reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
    reading.cancel()
    stopped.cancel()
    await runtime.stop()
    writer.close()


async def _follow_supervisor(
    runtime: LbRuntime, source: StaticSnapshotSource, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while line := await reader.readline():
            message = json.loads(line)
            if "snapshot" in message:
                source.set(message["snapshot"])
                await runtime.refresh()
                await _send(writer, {"applied": runtime.table.version})
            elif "report" in message:
                await _send(writer, {"report": message["report"], "figures": runtime.local_figures()})
            elif "health" in message:
                runtime.apply_shared_health(message["health"])
