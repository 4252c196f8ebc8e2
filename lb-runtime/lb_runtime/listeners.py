"""One bound listener: its server socket, its client connections, its balancer; bind, swap, drain, unbind."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import Any

from lb_runtime.backends import Backend, Balancer
from lb_runtime.hot_path import PYTHON_BUILD, HotPathBuild
from lb_runtime.regions import ClientLocator, RegionalBalancer, instance_regions
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import Listener
from lb_runtime.tcp_proxy import TcpClientConnection
from lb_runtime.tls import CertificateSelector

TLS_HANDSHAKE_TIMEOUT_SECONDS = 10.0


class ListenerState:
    """What every connection of one listener shares. ``balancer`` is replaced whole when instances change."""

    def __init__(
        self,
        config: Listener,
        settings: LbSettings,
        loop: asyncio.AbstractEventLoop,
        backends: Sequence[Backend],
        build: HotPathBuild = PYTHON_BUILD,
        locator: ClientLocator | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self.port = config.port
        self.protocol = config.protocol
        self.settings = settings
        self.loop = loop
        self.build = build  # compiled or pure Python: its classes serve every connection of this listener
        self.stats = build.listener_stats()
        self.locator = locator
        # With a region policy: the same object as ``balancer`` (lb_runtime.regions), else None.
        self.regional: RegionalBalancer | None = None
        self.instance_regions: dict[str, str | None] = {}  # instance id -> its region, for /stats
        self.balancer = self._balancer(config, backends)
        self.connections: set[Any] = set()
        self.closing = False
        self.scheme = b"https" if config.protocol == "https" else b"http"
        self.tls = (
            CertificateSelector(config.all_certificates(), config.route_certificates())
            if config.protocol == "https"
            else None
        )
        # A shared port: Host (lowercase, no port) -> the route's own state; None for a listener of one service.
        self.routes: dict[bytes, ListenerState] | None = None
        self.redirect_port = config.redirect_https_port
        self.server: asyncio.Server | None = None
        self._drained = asyncio.Event()

    def set_backends(self, config: Listener, backends: Sequence[Backend]) -> None:
        """Serve new instances (or a new algorithm) from the next request on; requests in flight keep theirs."""
        self.config = config
        self.balancer = self._balancer(config, backends)
        self.redirect_port = config.redirect_https_port
        if self.tls is not None:
            # New handshakes get the new certificates (a route's host only ever its own route's).
            self.tls.update(config.all_certificates(), config.route_certificates())

    def _balancer(self, config: Listener, backends: Sequence[Backend]) -> Balancer:
        for backend in backends:
            backend.stats = self.stats
        self.instance_regions = instance_regions(config)
        if config.regions is not None:
            if self.locator is None:
                self.locator = ClientLocator(self.settings)
            regional = RegionalBalancer(
                config.regions, config.algorithm, backends, self.instance_regions, self.build.balancer, self.locator
            )
            self.regional = regional
            return regional  # type: ignore[return-value]  # a Balancer by duck typing (pick, backends, algorithm)
        self.regional = None
        balancer: Balancer = self.build.balancer(config.algorithm, backends)
        return balancer

    async def bind(self, host: str, *, reuse_port: bool = False) -> None:
        """Start accepting on the listener's port (``reuse_port``: shared with other processes, SO_REUSEPORT)."""
        client_class = TcpClientConnection if self.protocol == "tcp" else self.build.http_client_connection
        factory: Any = functools.partial(client_class, self)
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {"ssl": self.tls.context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT_SECONDS}
        self.server = await self.loop.create_server(
            factory, host, self.config.port, reuse_address=True, reuse_port=reuse_port or None, backlog=4096, **tls
        )
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
        """Enforce timeouts: idle and stalled client connections, idle upstream connections (routes' too)."""
        for route in (self.routes or {}).values():
            route.sweep(now)
        for connection in list(self.connections):
            connection.check_deadline(now)
        oldest = now - self.settings.upstream_idle_timeout_seconds
        for backend in self.balancer.backends:
            idle = backend.idle
            while idle and idle[0].idle_since < oldest:
                idle.pop(0).close()
