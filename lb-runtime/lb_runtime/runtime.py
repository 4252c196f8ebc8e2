"""The proxy's life: pull snapshots, swap the route table, reconcile listeners, sweep timeouts, drain on stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry

from lb_runtime.admin import AdminServer
from lb_runtime.backends import Backend
from lb_runtime.health import apply_probe_result, probe_instance
from lb_runtime.listeners import ListenerState
from lb_runtime.route_table import RouteTable, RouteTableError, build_route_table, diff_tables
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import HealthCheck, Listener, SnapshotSource
from lb_runtime.stats import LbCollector, listener_stats_json
from shared.observability import get_logger, log_event

SWEEP_SECONDS = 0.25


class LbRuntime:
    """Owns the live route table and everything bound from it."""

    def __init__(self, settings: LbSettings, source: SnapshotSource) -> None:
        self.settings = settings
        self.source = source
        self.logger = get_logger("lb-runtime", settings.log_level)
        self.table = RouteTable()
        self.listeners: dict[str, ListenerState] = {}
        self._backends: dict[str, dict[str, Backend]] = {}
        self._health_tasks: dict[str, tuple[HealthCheck, asyncio.Task[None]]] = {}
        self._draining: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._apply_lock = asyncio.Lock()
        self._unbound: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(LbCollector(lambda: list(self.listeners.values())))
        self.admin = AdminServer(self.registry, self.health, self.stats)
        self.admin_port: int | None = None
        self.started = time.monotonic()
        self.stopping = False

    # --- life ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the first snapshot, bind its listeners and the admin port, start polling."""
        await self.refresh()
        # Port 0 picks a free port (tests); the bound one is in admin_port.
        self.admin_port = await self.admin.start(self.settings.admin_address, self.settings.admin_port)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll()), loop.create_task(self._sweep())]
        log_event(self.logger, "lb-runtime started", listeners=sorted(self.listeners), admin_port=self.admin_port)

    async def stop(self) -> None:
        """Stop accepting everywhere, let requests in flight finish (bounded by the drain timeout)."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for _, task in self._health_tasks.values():
            task.cancel()
        self._health_tasks.clear()
        async with self._apply_lock:
            listeners = list(self.listeners.values())
            cut = await asyncio.gather(
                *(listener.unbind(self.settings.drain_timeout_seconds) for listener in listeners)
            )
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)
        await self.admin.stop()
        log_event(self.logger, "lb-runtime stopped", connections_cut=sum(cut))

    # --- snapshots ---------------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Pull the source once; True when a new table was applied."""
        try:
            data = await self.source.get()
        except Exception as exc:
            self.logger.warning("snapshot unavailable, keeping the current table", extra={"reason": str(exc)})
            return False
        if data is None:
            return False
        try:
            table = build_route_table(data, self.table.version + 1)
        except RouteTableError as exc:
            self.logger.warning(
                "snapshot rejected, keeping the current table",
                extra={"reason": str(exc), "version": self.table.version},
            )
            return False
        if dict(table.listeners) == dict(self.table.listeners):
            return False  # a source may answer the same full snapshot every time: nothing to swap
        await self.apply(table)
        return True

    async def apply(self, table: RouteTable) -> None:
        """Swap to ``table``: bind new listeners, re-bind moved ones, update instances, drain removed ones."""
        async with self._apply_lock:
            diff = diff_tables(self.table, table)
            self.table = table
            for listener_id in (*diff.removed, *diff.rebound):
                self._start_unbind(listener_id)
            for listener_id in diff.changed:
                if listener_id in self.listeners:
                    self._update_listener(table.listeners[listener_id])
            self._unbound.update(diff.added)
            self._unbound.update(diff.rebound)
            await self._bind_pending()
            if not diff.empty:
                log_event(self.logger, "route table swapped", version=table.version, **diff.summary())

    async def _bind_pending(self) -> None:
        for listener_id in sorted(self._unbound):
            config = self.table.listeners.get(listener_id)
            if config is None:
                self._unbound.discard(listener_id)
                continue
            backends = self._sync_backends(config)
            state = ListenerState(config, self.settings, asyncio.get_running_loop(), backends)
            try:
                await state.bind(self.settings.bind_address)
            except OSError as exc:
                # Retried on the next poll: the port may be held by a listener that is still draining.
                self.logger.warning(
                    "listener bind failed", extra={"listener": listener_id, "port": config.port, "reason": str(exc)}
                )
                continue
            self._unbound.discard(listener_id)
            self.listeners[listener_id] = state
            self._sync_health_check(state)

    def _start_unbind(self, listener_id: str) -> None:
        state = self.listeners.pop(listener_id, None)
        health = self._health_tasks.pop(listener_id, None)
        if health is not None:
            health[1].cancel()
        self._unbound.discard(listener_id)
        if state is None:
            return
        # Draining must not hold up the swap: other listeners keep serving meanwhile.
        task = asyncio.get_running_loop().create_task(state.unbind(self.settings.drain_timeout_seconds))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        for backend in self._backends.pop(listener_id, {}).values():
            backend.removed = True
        if state.server is not None:
            state.server.close()  # free the port now; the connections drain in the task

    def _update_listener(self, config: Listener) -> None:
        state = self.listeners[config.id]
        state.set_backends(config, self._sync_backends(config))
        self._sync_health_check(state)

    def _sync_backends(self, config: Listener) -> list[Backend]:
        """The listener's backends for ``config``: kept where the instance is unchanged, removed ones drained."""
        known = self._backends.get(config.id, {})
        checked = config.health_check is not None
        fresh: dict[str, Backend] = {}
        for instance in config.instances:
            backend = known.get(instance.id)
            if backend is None or (backend.address, backend.port) != (instance.address, instance.port):
                backend = Backend(config.id, instance, checked=checked)
            else:
                backend.weight = instance.weight
                if not checked:
                    backend.healthy = True
            fresh[instance.id] = backend
        for instance_id, backend in known.items():
            if fresh.get(instance_id) is not backend:
                backend.removed = True  # drained: no new requests; in-flight ones finish, then its connections close
                backend.close_idle()
        self._backends[config.id] = fresh
        return list(fresh.values())

    def _sync_health_check(self, state: ListenerState) -> None:
        check = state.config.health_check
        current = self._health_tasks.get(state.id)
        if current is not None and current[0] == check:
            return
        if current is not None:
            current[1].cancel()
            del self._health_tasks[state.id]
        if check is not None:
            task = asyncio.get_running_loop().create_task(self._health_loop(state.id, check))
            self._health_tasks[state.id] = (check, task)

    async def _health_loop(self, listener_id: str, check: HealthCheck) -> None:
        while True:
            state = self.listeners.get(listener_id)
            if state is None:
                return
            backends = state.balancer.backends
            results = await asyncio.gather(*(probe_instance(backend, check) for backend in backends))
            for backend, passed in zip(backends, results, strict=True):
                if apply_probe_result(backend, passed, check):
                    log_event(
                        self.logger,
                        "instance health changed",
                        listener=listener_id,
                        instance=backend.id,
                        healthy=backend.healthy,
                    )
            await asyncio.sleep(check.interval_seconds)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_poll_seconds)
            try:
                await self.refresh()
                if self._unbound:
                    async with self._apply_lock:
                        await self._bind_pending()
            except Exception:
                self.logger.exception("snapshot refresh failed")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for state in list(self.listeners.values()):
                state.sweep(now)

    # --- admin views ---------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """/healthz: up, with how many listeners are bound and which are waiting for their port."""
        return {
            "status": "stopping" if self.stopping else "ok",
            "listeners": len(self.listeners),
            "unbound": sorted(self._unbound),
            "table_version": self.table.version,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
        }

    def stats(self, listener_id: str | None = None) -> dict[str, Any] | None:
        """/stats: per-listener rps, latency percentiles, errors and instances (one listener, or all)."""
        if listener_id is not None:
            state = self.listeners.get(listener_id)
            return None if state is None else listener_stats_json(state)
        return {"listeners": [listener_stats_json(state) for state in self.listeners.values()]}

    def listener_port(self, listener_id: str) -> int:
        """The port a listener is bound to (useful when the snapshot asked for port 0)."""
        return self.listeners[listener_id].port
