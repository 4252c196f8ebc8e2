"""The admin port: Prometheus /metrics, /healthz and per-listener /stats JSON, on 127.0.0.1 by default."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_ADMIN_REQUEST = 8192


class AdminServer:
    """A deliberately small HTTP/1.1 server (one request per connection) for operators and scrapers."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Callable[[], dict[str, Any]],
        stats: Callable[[str | None], dict[str, Any] | None],
    ) -> None:
        self._registry = registry
        self._health = health
        self._stats = stats
        # Awaited before /metrics and /stats are answered (a supervisor gathers its workers' figures there).
        self.refresh: Callable[[], Awaitable[None]] | None = None
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind and serve; returns the bound port."""
        self.server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                if self.refresh is not None and _target_path(head) in (b"/metrics", b"/stats"):
                    await self.refresh()
            status, content_type, body = self._route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (status, b"OK" if status == 200 else b"Error", content_type.encode(), len(body))
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _route(self, head: bytes) -> tuple[int, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return _error(400, "bad_request", "malformed request line")
        method, target = parts[0], parts[1].decode("latin-1")
        if method != b"GET":
            return _error(405, "method_not_allowed", "only GET is served here")
        path, _, query = target.partition("?")
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            return 200, "application/json", json.dumps(self._health()).encode()
        if path == "/stats":
            listener_id = parse_qs(query).get("listener", [None])[0]
            stats = self._stats(listener_id)
            if stats is None:
                return _error(404, "not_found", f"no listener {listener_id!r}")
            return 200, "application/json", json.dumps(stats).encode()
        return _error(404, "not_found", f"nothing at {path}")


def _target_path(head: bytes) -> bytes:
    parts = head.split(b"\r\n", 1)[0].split()
    return parts[1].split(b"?", 1)[0] if len(parts) == 3 else b""


def _error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps({"error": {"code": code, "message": message}}).encode()
