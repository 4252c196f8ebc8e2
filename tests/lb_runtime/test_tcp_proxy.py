"""TCP mode: bytes both ways, half-close passed on, both sides closed when either ends."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from tests.lb_runtime.support import TcpEchoBackend, listener, running_lb
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async


@pytest.fixture
async def echo() -> AsyncIterator[TcpEchoBackend]:
    backend = await TcpEchoBackend().start()
    yield backend
    await backend.stop()


def _instance(backend: TcpEchoBackend, name: str = "echo") -> dict:
    return {"id": name, "address": "127.0.0.1", "port": backend.port}


async def test_tcp_echoes_bytes_and_passes_half_close(echo: TcpEchoBackend) -> None:
    async with running_lb({"listeners": [listener("raw", [_instance(echo)], protocol="tcp")]}) as (runtime, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("raw"))
        # GIVEN 1 MB written in pieces and echoed back
        payload = os.urandom(1024 * 1024)
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        assert echoed == payload
        # WHEN the client half-closes
        writer.write_eof()
        # THEN the instance sees the EOF, still answers through the open direction, and both ends close
        tail = await asyncio.wait_for(reader.read(), 5)
        assert tail == b"total=%d" % len(payload)
        writer.close()
        state = runtime.listeners["raw"]
        await wait_until_async(lambda: not state.connections and echo.open_connections == 0)


async def test_tcp_probe_connection_does_not_leak(echo: TcpEchoBackend) -> None:
    # wrk-style probe: connect and close at once, before anything is sent
    async with running_lb({"listeners": [listener("raw", [_instance(echo)], protocol="tcp")]}) as (runtime, _):
        for _ in range(20):
            _, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("raw"))
            writer.close()
        state = runtime.listeners["raw"]
        await wait_until_async(lambda: not state.connections and echo.open_connections == 0)
        assert echo.connections <= 20


async def test_tcp_client_closed_when_the_instance_ends(echo: TcpEchoBackend) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        instance = {"id": "h", "address": "127.0.0.1", "port": server.sockets[0].getsockname()[1]}
        async with running_lb({"listeners": [listener("raw", [instance], protocol="tcp")]}) as (runtime, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("raw"))
            assert await asyncio.wait_for(reader.read(), 5) == b"bye"
            writer.close()
            await wait_until_async(lambda: not runtime.listeners["raw"].connections)
    finally:
        server.close()


async def test_tcp_retries_a_refused_instance(echo: TcpEchoBackend) -> None:
    dead = {"id": "dead", "address": "127.0.0.1", "port": free_port()}
    snapshot = {"listeners": [listener("raw", [dead, _instance(echo)], protocol="tcp")]}
    async with running_lb(snapshot) as (runtime, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("raw"))
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()


async def test_tcp_without_instances_closes_the_client() -> None:
    async with running_lb({"listeners": [listener("raw", [], protocol="tcp")]}) as (runtime, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("raw"))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_tcp_health_check_keeps_a_dead_instance_out(echo: TcpEchoBackend) -> None:
    # GIVEN a tcp listener with a TCP-connect health check over a live and a dead instance
    dead = {"id": "dead", "address": "127.0.0.1", "port": free_port()}
    check = {"type": "tcp", "interval_seconds": 0.1, "timeout_seconds": 1}
    snapshot = {"listeners": [listener("raw", [dead, _instance(echo)], protocol="tcp", health_check=check)]}
    async with running_lb(snapshot) as (runtime, _):
        state = runtime.listeners["raw"]
        await wait_until_async(lambda: all(b.probed for b in state.balancer.backends))
        # WHEN clients connect
        for _ in range(6):
            reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("raw"))
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            writer.close()
        # THEN the dead instance was never tried (no failed connect), the live one took every connection
        by_id = {b.id: b for b in state.balancer.backends}
        assert by_id["dead"].healthy is False
        assert by_id["dead"].failures == 0
        assert by_id["echo"].connections_opened == 6  # (the echo server also saw the health checks)
