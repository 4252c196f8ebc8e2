"""Small real servers for lb-runtime's tests: an HTTP/1.1 backend and a TCP echo backend, both asyncio.

The HTTP backend is written by hand on asyncio streams (not a framework) so the tests see exactly what
reached it: headers, bodies, and how many connections the proxy opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from lb_runtime import LbRuntime, LbSettings, StaticSnapshotSource


@dataclass
class HttpBackend:
    """Answers by path: /slow?s=SECONDS, /echo (body back, chunked), /close (close-delimited), /hang, /trickle,
    /headers (the request's headers as JSON), /healthz (status from ``health_status``); else 200 with its name.
    """

    name: str
    port: int = 0
    requests: int = 0
    connections: int = 0
    open_connections: int = 0
    in_flight: int = 0
    health_status: int = 200
    health_checks: int = 0  # GET /healthz answered
    delay: float = 0.0  # added to every answer
    paths: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> HttpBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    @property
    def instance(self) -> dict[str, Any]:
        return {"id": self.name, "address": "127.0.0.1", "port": self.port}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        path, _, query = target.partition("?")
        if path == "/healthz":
            self.health_checks += 1
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % self.health_status)
            await writer.drain()
            return True
        self.requests += 1
        self.paths.append(path)
        self.in_flight += 1
        try:
            return await self._answer(writer, method, path, query, headers, body)
        finally:
            self.in_flight -= 1

    async def _answer(
        self, writer: asyncio.StreamWriter, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> bool:
        name = self.name.encode()
        if self.delay:
            await asyncio.sleep(self.delay)
        if path == "/slow":
            await asyncio.sleep(float(query.partition("=")[2] or "0.5"))
        elif path == "/hang":
            await asyncio.sleep(3600)
        elif path == "/trickle":
            # ?every=S&parts=N: the body in N parts of 10 bytes, S seconds apart; &stall=1: then one more part
            # is announced by the Content-Length and never sent
            options = {key: values[0] for key, values in parse_qs(query).items()}
            parts, stall = int(options["parts"]), options.get("stall") == "1"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 * (parts + stall)))
            for _ in range(parts):
                await writer.drain()
                await asyncio.sleep(float(options["every"]))
                writer.write(b"0123456789")
            await writer.drain()
            if stall:
                await asyncio.sleep(3600)
            return True
        elif path == "/echo":
            writer.write(b"HTTP/1.1 200 OK\r\nX-Backend: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % name)
            for start in range(0, len(body), 7000):
                piece = body[start : start + 7000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        elif path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nX-Backend: %s\r\nConnection: close\r\n\r\n" % name)
            for _ in range(50):
                writer.write(b"0123456789" * 100)
            await writer.drain()
            return False
        payload = json.dumps(headers).encode() if path == "/headers" else name
        writer.write(self.plain_answer(payload, head_only=method == "HEAD"))
        await writer.drain()
        return True

    def plain_answer(self, payload: bytes | None = None, *, head_only: bool = False) -> bytes:
        """The bytes of an ordinary answer (GET / answers ``plain_answer()``): what the proxy reads from here."""
        payload = self.name.encode() if payload is None else payload
        head = b"HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Length: %d\r\nX-Hop: a\r\nKeep-Alive: timeout=5\r\n\r\n"
        return head % (self.name.encode(), 0 if head_only else len(payload)) + (b"" if head_only else payload)


@dataclass
class TcpEchoBackend:
    """Echoes every byte; on the client's EOF writes ``total=N`` (bytes seen) and closes its side."""

    port: int = 0
    connections: int = 0
    open_connections: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> TcpEchoBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        total = 0
        try:
            while data := await reader.read(65536):
                total += len(data)
                writer.write(data)
                await writer.drain()
            writer.write(b"total=%d" % total)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.open_connections -= 1
            writer.close()


def listener(listener_id: str, instances: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A snapshot listener on an ephemeral port (port 0) unless ``port`` is given."""
    return {
        "id": listener_id,
        "port": 0,
        "protocol": "http",
        "algorithm": "round_robin",
        "instances": instances,
    } | extra


@contextlib.asynccontextmanager
async def running_lb(
    snapshot: dict[str, Any], **settings: Any
) -> AsyncIterator[tuple[LbRuntime, StaticSnapshotSource]]:
    """An in-process lb-runtime on this test's event loop, admin on an ephemeral port; stopped at exit."""
    source = StaticSnapshotSource(snapshot)
    defaults: dict[str, Any] = {"admin_port": 0, "snapshot_poll_seconds": 0.05, "drain_timeout_seconds": 5.0}
    runtime = LbRuntime(LbSettings(**(defaults | settings)), source)
    await runtime.start()
    try:
        yield runtime, source
    finally:
        await runtime.stop()
