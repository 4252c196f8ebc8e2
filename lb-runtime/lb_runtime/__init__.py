"""lb-runtime: the asyncio proxy that carries customer traffic to a service's healthy containers."""

from lb_runtime.route_table import RouteTable, RouteTableError, build_route_table
from lb_runtime.runtime import LbRuntime
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import JsonFileSnapshotSource, SnapshotSource, StaticSnapshotSource

__all__ = [
    "JsonFileSnapshotSource",
    "LbRuntime",
    "LbSettings",
    "RouteTable",
    "RouteTableError",
    "SnapshotSource",
    "StaticSnapshotSource",
    "build_route_table",
]
