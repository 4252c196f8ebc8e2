"""The proxy's life: pull snapshots, swap the route table, reconcile listeners, sweep timeouts, drain on stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from lb_runtime.admin import AdminServer
from lb_runtime.backends import Backend
from lb_runtime.health import apply_probe_result, probe_instance
from lb_runtime.hot_path import select_build
from lb_runtime.listeners import ListenerState
from lb_runtime.regions import ClientLocator
from lb_runtime.route_table import RouteTable, RouteTableError, build_route_table, diff_tables
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import HealthCheck, Listener, SnapshotSource
from lb_runtime.stats import LbCollector, listener_figures, stats_json
from shared.observability import get_logger, log_event

SWEEP_SECONDS = 0.25
# single: one process does everything. With --processes N, a supervisor polls the source, runs the health
# checks and owns the admin port without binding listeners, and N workers serve traffic on shared ports
# (SO_REUSEPORT), taking snapshots and health from the supervisor (lb_runtime.processes).
Role = Literal["single", "supervisor", "worker"]


class LbRuntime:
    """Owns the live route table and everything bound from it."""

    def __init__(self, settings: LbSettings, source: SnapshotSource, role: Role = "single") -> None:
        self.settings = settings
        self.source = source
        self.role = role
        self.logger = get_logger("lb-runtime", settings.log_level)
        self.build = select_build(settings.hot_path)  # compiled when built, else pure Python
        # Client address and region for listeners with a region policy (its country table is read here: a bad
        # file stops the start).
        self.locator = ClientLocator(settings)
        self.table = RouteTable()
        self.listeners: dict[str, ListenerState] = {}
        # Host routes of shared listeners, by route id: each a ListenerState of its own (no socket of its own).
        self.routes: dict[str, ListenerState] = {}
        self._backends: dict[str, dict[str, Backend]] = {}
        self._health_tasks: dict[str, tuple[HealthCheck, asyncio.Task[None]]] = {}
        self._draining: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._apply_lock = asyncio.Lock()
        self._unbound: set[str] = set()
        # A supervisor's figures are its workers' (set by lb_runtime.processes); else this process's listeners.
        self.figures: Callable[[], Iterable[dict[str, Any]]] = self.local_figures
        # Shared health (worker): the supervisor's verdicts, by listener and instance, applied to new backends too.
        self.shared_health: dict[str, dict[str, bool]] = {}
        # Told of every applied snapshot and every health flip (a supervisor passes them to its workers).
        self.on_snapshot: Callable[[dict[str, Any]], None] | None = None
        self.on_health_change: Callable[[str, str, bool], None] | None = None
        self.worker_pids: Callable[[], list[int]] = list  # a supervisor's workers, for /healthz
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(LbCollector(lambda: self.figures()))
        self.admin = AdminServer(self.registry, self.health, self.stats)
        self.admin_port: int | None = None
        self.started = time.monotonic()
        self.stopping = False

    # --- life ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the first snapshot, bind its listeners and the admin port, start polling."""
        await self.refresh()
        loop = asyncio.get_running_loop()
        if self.role != "worker":  # a worker has no admin port: its supervisor asks it for figures
            # Port 0 picks a free port (tests); the bound one is in admin_port.
            self.admin_port = await self.admin.start(self.settings.admin_address, self.settings.admin_port)
        self._tasks = [loop.create_task(self._poll()), loop.create_task(self._sweep())]
        log_event(
            self.logger,
            "lb-runtime started",
            listeners=sorted(self.listeners),
            admin_port=self.admin_port,
            hot_path=self.build.name,
            role=self.role,
        )

    async def stop(self) -> None:
        """Stop accepting everywhere, let requests in flight finish (bounded by the drain timeout)."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for _, task in self._health_tasks.values():
            task.cancel()
        self._health_tasks.clear()
        async with self._apply_lock:
            listeners = [*self.listeners.values(), *self.routes.values()]
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
        if self.on_snapshot is not None:
            self.on_snapshot(data)
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
            state = ListenerState(config, self.settings, asyncio.get_running_loop(), backends, self.build, self.locator)
            try:
                if self.role != "supervisor":  # a supervisor tracks listeners (health, figures); workers serve
                    await state.bind(self.settings.bind_address, reuse_port=self.role == "worker")
            except OSError as exc:
                # Retried on the next poll: the port may be held by a listener that is still draining.
                self.logger.warning(
                    "listener bind failed", extra={"listener": listener_id, "port": config.port, "reason": str(exc)}
                )
                continue
            self._unbound.discard(listener_id)
            self.listeners[listener_id] = state
            self._sync_health_check(state)
            self._sync_routes(state)

    def _start_unbind(self, listener_id: str) -> None:
        state = self.listeners.pop(listener_id, None)
        if state is not None:
            for route in (state.routes or {}).values():
                self._retire(route)
            state.routes = None
        health = self._health_tasks.pop(listener_id, None)
        if health is not None:
            health[1].cancel()
        self._unbound.discard(listener_id)
        if state is None:
            return
        self._drain(state)
        if state.server is not None:
            state.server.close()  # free the port now; the connections drain in the task

    def _drain(self, state: ListenerState) -> None:
        # Draining must not hold up the swap: other listeners keep serving meanwhile.
        task = asyncio.get_running_loop().create_task(state.unbind(self.settings.drain_timeout_seconds))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        for backend in self._backends.pop(state.id, {}).values():
            backend.removed = True

    def _retire(self, route: ListenerState) -> None:
        """A host route left its shared listener: no new requests; its connections finish and close."""
        self.routes.pop(route.id, None)
        health = self._health_tasks.pop(route.id, None)
        if health is not None:
            health[1].cancel()
        self._drain(route)

    def _sync_routes(self, state: ListenerState) -> None:
        """Create, update or retire the host routes of a (shared) listener from its config."""
        current = {route.id: route for route in (state.routes or {}).values()}
        if not state.config.routes:
            for route in current.values():
                self._retire(route)
            state.routes = None
            return
        fresh: dict[bytes, ListenerState] = {}
        for host_route, config in zip(state.config.routes, state.config.route_listeners(), strict=True):
            backends = self._sync_backends(config)
            if config.id in current:
                route = current.pop(config.id)
                route.set_backends(config, backends)
            else:
                route = ListenerState(
                    config, self.settings, asyncio.get_running_loop(), backends, self.build, self.locator
                )
            route.scheme, route.port = state.scheme, state.port
            fresh[host_route.host.encode()] = route
            self.routes[config.id] = route
            self._sync_health_check(route)
        for route in current.values():
            self._retire(route)
        state.routes = fresh  # swapped whole: a connection routes by what it finds at its request

    def _update_listener(self, config: Listener) -> None:
        state = self.listeners[config.id]
        state.set_backends(config, self._sync_backends(config))
        self._sync_health_check(state)
        self._sync_routes(state)

    def _sync_backends(self, config: Listener) -> list[Backend]:
        """The listener's backends for ``config``: kept where the instance is unchanged, removed ones drained."""
        known = self._backends.get(config.id, {})
        checked = config.health_check is not None
        fresh: dict[str, Backend] = {}
        for instance in config.instances:
            backend = known.get(instance.id)
            if backend is None or (backend.address, backend.port) != (instance.address, instance.port):
                backend = self.build.backend(config.id, instance, checked=checked)
                if checked and self.role == "worker":
                    backend.healthy = self.shared_health.get(config.id, {}).get(instance.id, False)
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

    def apply_shared_health(self, verdicts: dict[str, dict[str, bool]]) -> None:
        """Worker: take the supervisor's health verdicts (listener -> instance -> healthy) for checked listeners."""
        self.shared_health = verdicts
        for listener_id, instances in verdicts.items():
            state = self.listeners.get(listener_id) or self.routes.get(listener_id)
            if state is None or state.config.health_check is None:
                continue
            for backend in state.balancer.backends:
                healthy = instances.get(backend.id)
                if healthy is not None and healthy != backend.healthy:
                    backend.healthy = healthy
                    if healthy:
                        backend.ejected_until = 0.0

    def health_verdicts(self) -> dict[str, dict[str, bool]]:
        """Every checked listener's instances and whether they pass (what a supervisor shares)."""
        return {
            state.id: {backend.id: backend.healthy for backend in state.balancer.backends}
            for state in (*self.listeners.values(), *self.routes.values())
            if state.config.health_check is not None
        }

    def _sync_health_check(self, state: ListenerState) -> None:
        if self.role == "worker":
            return  # the supervisor checks once for all workers
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
            state = self.listeners.get(listener_id) or self.routes.get(listener_id)
            if state is None:
                return
            backends = state.balancer.backends
            results = await asyncio.gather(*(probe_instance(backend, check) for backend in backends))
            for backend, passed in zip(backends, results, strict=True):
                if apply_probe_result(backend, passed, check):
                    if self.on_health_change is not None:
                        self.on_health_change(listener_id, backend.id, backend.healthy)
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
            "hot_path": self.build.name,
            "role": self.role,
            "workers": self.worker_pids(),
            "uptime_seconds": round(time.monotonic() - self.started, 1),
        }

    def local_figures(self) -> list[dict[str, Any]]:
        """This process's figures, one entry per listener (a worker's report to its supervisor)."""
        return [listener_figures(state) for state in (*self.listeners.values(), *self.routes.values())]

    def stats(self, listener_id: str | None = None) -> dict[str, Any] | None:
        """/stats: per-listener rps, latency percentiles, errors and instances (one listener, or all)."""
        figures = [stats_json(entry) for entry in self.figures() if listener_id is None or entry["id"] == listener_id]
        if listener_id is not None:
            return figures[0] if figures else None
        return {"listeners": figures}

    def listener_port(self, listener_id: str) -> int:
        """The port a listener is bound to (useful when the snapshot asked for port 0)."""
        return self.listeners[listener_id].port
