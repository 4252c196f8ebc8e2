"""``python -m lb_runtime [--snapshot FILE] [--admin-port N]``: run the proxy until SIGTERM (or SIGINT).

Without a snapshot file the proxy follows the control plane: listeners from PostgreSQL
(BERTH_DATABASE_URL) and their passing instances from the service registry (BERTH_REGISTRY)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop

from lb_runtime.processes import Supervisor, serve_worker
from lb_runtime.runtime import LbRuntime
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import JsonFileSnapshotSource, SnapshotSource
from shared.registry import ServiceRegistry


def parse_settings(argv: list[str] | None = None) -> tuple[LbSettings, int | None]:
    """Settings from BERTH_LB_* variables, overridden by command-line options; and a worker's channel fd."""
    parser = argparse.ArgumentParser(prog="lb_runtime", description="Berth's load-balancing proxy")
    parser.add_argument(
        "--snapshot",
        help="JSON snapshot file, re-read when it changes (BERTH_LB_SNAPSHOT_PATH); without one, the control plane",
    )
    parser.add_argument("--admin-port", type=int, help="Prometheus /metrics, /healthz and /stats (BERTH_LB_ADMIN_PORT)")
    parser.add_argument("--admin-address", help="admin bind address (BERTH_LB_ADMIN_ADDRESS)")
    parser.add_argument("--bind-address", help="listeners' bind address (BERTH_LB_BIND_ADDRESS)")
    parser.add_argument("--upstream-pool-size", type=int, help="idle upstream connections kept per instance")
    parser.add_argument(
        "--processes", type=int, help="worker processes sharing the listener ports (BERTH_LB_PROCESSES, default 1)"
    )
    # A worker of a supervisor (lb_runtime.processes): its channel and the supervisor's exact settings.
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_settings is not None:
        return LbSettings.model_validate_json(args.worker_settings), args.worker_fd
    overrides = {
        key: value
        for key, value in {
            "snapshot_path": args.snapshot,
            "admin_port": args.admin_port,
            "admin_address": args.admin_address,
            "bind_address": args.bind_address,
            "upstream_pool_size": args.upstream_pool_size,
            "processes": args.processes,
        }.items()
        if value is not None
    }
    return LbSettings(**overrides), None


def snapshot_source(settings: LbSettings) -> tuple[SnapshotSource, ServiceRegistry | None]:
    """The JSON file when one is given, else the control plane's database and registry (and the registry,
    which the proxy also announces itself to)."""
    if settings.snapshot_path:
        return JsonFileSnapshotSource(settings.snapshot_path), None
    from lb_runtime.control_plane import ControlPlaneSource
    from shared.registry import RegistrySettings, get_registry

    registry_settings = RegistrySettings()
    registry = get_registry(registry_settings)
    shared_ports = (settings.shared_http_port, settings.shared_https_port)
    return ControlPlaneSource(registry_settings.database_url, registry, shared_ports=shared_ports), registry


async def serve(settings: LbSettings) -> None:
    """Run until the first SIGTERM/SIGINT, then drain; a second signal cuts the drain short."""
    source, registry = snapshot_source(settings)
    runtime: LbRuntime | Supervisor = (
        Supervisor(settings, source) if settings.processes > 1 else LbRuntime(settings, source)
    )
    await runtime.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    announcing = None
    if registry is not None and runtime.admin_port is not None:
        from lb_runtime.announce import announce, lb_instance

        instance = lb_instance(settings.admin_address, runtime.admin_port)
        announcing = asyncio.create_task(announce(registry, instance, stop))

    def on_signal() -> None:
        if stop.is_set():
            if isinstance(runtime, Supervisor):
                runtime.force_stop()  # the workers get their second signal too
            sys.exit(1)  # second signal: stop waiting for in-flight work
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await stop.wait()
    if announcing is not None:
        await announcing  # leaves the registry first: no new traffic is sent its way while it drains
    await runtime.stop()


async def serve_as_worker(settings: LbSettings, channel_fd: int) -> None:
    """A worker of a supervisor: the first SIGTERM/SIGINT drains, a second exits at once."""
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            sys.exit(1)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await serve_worker(settings, channel_fd, stop)


def main(argv: list[str] | None = None) -> int:
    settings, worker_fd = parse_settings(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings) if worker_fd is None else serve_as_worker(settings, worker_fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
