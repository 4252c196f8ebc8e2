"""One bound listener: its server socket, its client connections, its balancer; bind, swap, drain, unbind."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from lb_runtime.backends import Backend, Balancer
from lb_runtime.http_proxy import HttpClientConnection
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import Listener
from lb_runtime.stats import ListenerStats
from lb_runtime.tcp_proxy import TcpClientConnection


class ListenerState:
    """What every connection of one listener shares. ``balancer`` is replaced whole when instances change."""

    def __init__(
        self, config: Listener, settings: LbSettings, loop: asyncio.AbstractEventLoop, backends: Sequence[Backend]
    ) -> None:
        self.config = config
        self.id = config.id
        self.port = config.port
        self.protocol = config.protocol
        self.settings = settings
        self.loop = loop
        self.stats = ListenerStats()
        self.balancer = self._balancer(config, backends)
        self.connections: set[Any] = set()
        self.closing = False
        self.scheme = b"http"
        self.server: asyncio.Server | None = None
        self._drained = asyncio.Event()

    def set_backends(self, config: Listener, backends: Sequence[Backend]) -> None:
        """Serve new instances (or a new algorithm) from the next request on; requests in flight keep theirs."""
        self.config = config
        self.balancer = self._balancer(config, backends)

    def _balancer(self, config: Listener, backends: Sequence[Backend]) -> Balancer:
        for backend in backends:
            backend.stats = self.stats
        return Balancer(config.algorithm, backends)

    async def bind(self, host: str) -> None:
        """Start accepting on the listener's port."""
        factory: Any = (
            (lambda: HttpClientConnection(self)) if self.protocol == "http" else (lambda: TcpClientConnection(self))
        )
        self.server = await self.loop.create_server(factory, host, self.config.port, reuse_address=True, backlog=4096)
        if not self.config.port:
            self.port = self.server.sockets[0].getsockname()[1]

    def connection_closed(self) -> None:
        if self.closing and not self.connections:
            self._drained.set()

    async def unbind(self, drain_seconds: float) -> int:
        """Stop accepting, let requests in flight finish (up to ``drain_seconds``), then close what is left.

        Returns how many connections had to be cut at the timeout.
        """
        self.closing = True
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.drain()
        cut = 0
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_seconds):
                    await self._drained.wait()
        for connection in list(self.connections):
            cut += 1
            connection.transport.abort()
        for backend in self.balancer.backends:
            backend.close_idle()
        return cut

    def sweep(self, now: float) -> None:
        """Enforce timeouts: idle and stalled client connections, idle upstream connections."""
        for connection in list(self.connections):
            connection.check_deadline(now)
        oldest = now - self.settings.upstream_idle_timeout_seconds
        for backend in self.balancer.backends:
            idle = backend.idle
            while idle and idle[0].idle_since < oldest:
                idle.pop(0).close()
