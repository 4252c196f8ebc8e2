"""TCP mode: bytes both ways between a client and one instance, with backpressure and half-close.

Each side is a low-level Protocol: a full write buffer on one side pauses reading on the other; an EOF
from one side is passed on as a write EOF (half-close) and the pair closes once both sides ended, or as
soon as either side's connection is lost.

Bytes are counted once per read: what the client sends on the listener's ``bytes_in`` (all of it, forwarded
or not) and, once forwarded, on the instance's; what the instance sends, once forwarded to the client, on
both ``bytes_out``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from lb_runtime.backends import Backend
from lb_runtime.http_proxy import keep_task

if TYPE_CHECKING:
    from lb_runtime.listeners import ListenerState


class _Side(asyncio.Protocol):
    """What both ends share: pass EOF on, backpressure, close together (each end forwards and counts its reads)."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.peer: _Side | None = None
        self.eof = False
        self.closed = False
        self.last_activity = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None:
            return True  # not paired yet: the EOF is passed on once the upstream is connected
        if peer.eof or peer.closed:
            self.close()
            peer.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        return True  # keep our write side open: the peer may still answer

    def pause_writing(self) -> None:
        if self.peer is not None and not self.peer.closed:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.closed:
            self.peer.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.peer is not None:
            self.peer.close()


class TcpUpstreamConnection(_Side):
    """The instance's end of a forwarded TCP connection."""

    def __init__(self) -> None:
        super().__init__()
        # Set when paired with its client: where the bytes the instance sends are counted.
        self.backend: Backend | None = None
        self.stats: Any = None

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        peer, backend = self.peer, self.backend
        if peer is not None and backend is not None and not peer.closed:
            size = len(data)
            backend.bytes_out += size
            self.stats.bytes_out += size
            peer.transport.write(data)


class TcpClientConnection(_Side):
    """A client connection to a TCP listener, forwarded to one instance picked at connect."""

    def __init__(self, listener: ListenerState) -> None:
        super().__init__()
        self.listener = listener
        self.stats = listener.stats
        self.settings = listener.settings
        self.loop = listener.loop
        self.backend: Backend | None = None
        self.buffered: list[bytes] = []
        self.started = 0.0
        self.failed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        listener = self.listener
        listener.connections.add(self)
        listener.stats.connections_total += 1
        self.started = self.last_activity = time.monotonic()
        if len(listener.connections) > self.settings.max_connections or listener.closing:
            self.close()
            return
        transport.pause_reading()
        keep_task(self.loop.create_task(self._connect()))

    async def _connect(self) -> None:
        listener, settings = self.listener, self.settings
        tried: list[Backend] = []
        while not self.closed and len(tried) <= settings.connect_retries:
            backend = listener.balancer.pick(tried)
            if backend is None:
                break
            backend.active += 1
            try:
                async with asyncio.timeout(settings.connect_timeout_seconds):
                    _, upstream = await self.loop.create_connection(
                        TcpUpstreamConnection, backend.address, backend.port
                    )
            except (OSError, TimeoutError):
                backend.active -= 1
                backend.eject(settings.eject_seconds)  # counted as a failure; the connection is counted once, below
                tried.append(backend)
                continue
            backend.connections_opened += 1
            if self.closed:
                backend.active -= 1
                upstream.close()
                return
            self.backend = backend
            self.peer = upstream
            upstream.peer = self
            upstream.backend = backend
            upstream.stats = self.stats
            if self.buffered:
                data = b"".join(self.buffered)
                backend.bytes_in += len(data)
                upstream.transport.write(data)
                self.buffered = []
            if self.eof and upstream.transport.can_write_eof():
                upstream.transport.write_eof()
            else:
                self.transport.resume_reading()
            return
        self.failed = True
        self.close()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        size = len(data)
        self.stats.bytes_in += size
        peer, backend = self.peer, self.backend
        if peer is None:
            self.buffered.append(data)
        elif backend is not None and not peer.closed:
            backend.bytes_in += size
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        listener = self.listener
        listener.connections.discard(self)
        elapsed = time.monotonic() - self.started
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.active -= 1
            backend.record(200, elapsed)
        else:
            listener.stats.record(elapsed, self.failed)
        listener.connection_closed()

    def drain(self) -> None:
        """A TCP stream has no request boundary: it is left to finish (or to the drain timeout)."""

    def check_deadline(self, now: float) -> None:
        """Close a half-closed pair that stays silent (both directions) past the idle timeout."""
        peer = self.peer
        if not (self.eof or (peer is not None and peer.eof)):
            return  # a full-duplex TCP stream may legitimately idle for long
        last = max(self.last_activity, peer.last_activity if peer is not None else 0.0)
        if time.monotonic() - last > self.settings.client_idle_timeout_seconds:
            self.close()
