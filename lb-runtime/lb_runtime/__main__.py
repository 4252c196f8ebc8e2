"""``python -m lb_runtime [--snapshot FILE] [--admin-port N]``: run the proxy until SIGTERM (or SIGINT).

Without a snapshot file the proxy follows the control plane: listeners from PostgreSQL
(BERTH_DATABASE_URL) and their passing instances from the service registry (BERTH_REGISTRY)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop

from lb_runtime.runtime import LbRuntime
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import JsonFileSnapshotSource, SnapshotSource
from shared.registry import ServiceRegistry


def parse_settings(argv: list[str] | None = None) -> LbSettings:
    """Settings from BERTH_LB_* variables, overridden by command-line options."""
    parser = argparse.ArgumentParser(prog="lb_runtime", description="Berth's load-balancing proxy")
    parser.add_argument(
        "--snapshot",
        help="JSON snapshot file, re-read when it changes (BERTH_LB_SNAPSHOT_PATH); without one, the control plane",
    )
    parser.add_argument("--admin-port", type=int, help="Prometheus /metrics, /healthz and /stats (BERTH_LB_ADMIN_PORT)")
    parser.add_argument("--admin-address", help="admin bind address (BERTH_LB_ADMIN_ADDRESS)")
    parser.add_argument("--bind-address", help="listeners' bind address (BERTH_LB_BIND_ADDRESS)")
    parser.add_argument("--upstream-pool-size", type=int, help="idle upstream connections kept per instance")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "snapshot_path": args.snapshot,
            "admin_port": args.admin_port,
            "admin_address": args.admin_address,
            "bind_address": args.bind_address,
            "upstream_pool_size": args.upstream_pool_size,
        }.items()
        if value is not None
    }
    return LbSettings(**overrides)


def snapshot_source(settings: LbSettings) -> tuple[SnapshotSource, ServiceRegistry | None]:
    """The JSON file when one is given, else the control plane's database and registry (and the registry,
    which the proxy also announces itself to)."""
    if settings.snapshot_path:
        return JsonFileSnapshotSource(settings.snapshot_path), None
    from lb_runtime.control_plane import ControlPlaneSource
    from shared.registry import RegistrySettings, get_registry

    registry_settings = RegistrySettings()
    registry = get_registry(registry_settings)
    return ControlPlaneSource(registry_settings.database_url, registry), registry


async def serve(settings: LbSettings) -> None:
    """Run until the first SIGTERM/SIGINT, then drain; a second signal cuts the drain short."""
    source, registry = snapshot_source(settings)
    runtime = LbRuntime(settings, source)
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
            sys.exit(1)  # second signal: stop waiting for in-flight work
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await stop.wait()
    if announcing is not None:
        await announcing  # leaves the registry first: no new traffic is sent its way while it drains
    await runtime.stop()


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
