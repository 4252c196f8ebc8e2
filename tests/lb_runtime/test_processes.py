"""``--processes N``: workers share each listener port (SO_REUSEPORT) under one supervisor that polls, checks
health once for everyone, sums the figures on its admin port and passes SIGTERM on for a drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.lb_runtime.support import listener
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async

PROCESSES = 2


@contextlib.asynccontextmanager
async def running_supervisor(
    tmp_path: Path, snapshot: dict[str, Any]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``python -m lb_runtime --processes 2`` on a snapshot file; yields the process and its admin URL."""
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot))
    admin_port = free_port()
    env = os.environ | {"BERTH_LB_SNAPSHOT_POLL_SECONDS": "0.05", "BERTH_LB_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lb_runtime",
        "--snapshot",
        str(path),
        "--admin-port",
        str(admin_port),
        "--processes",
        str(PROCESSES),
        env=env,
    )
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        async with httpx.AsyncClient() as client:

            async def workers_ready() -> bool:
                return len((await client.get(f"{admin}/healthz")).json()["workers"]) == PROCESSES

            await wait_until_async(
                workers_ready, timeout=30, ignoring=(httpx.TransportError,), message="the workers did not start"
            )
        yield process, admin
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def fresh_connection_get(url: str) -> httpx.Response:
    """One request on its own connection (the kernel picks a worker per connection)."""
    async with httpx.AsyncClient() as client:
        return await client.get(url)


RAW_GET = b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"


async def raw_get(port: int) -> bytes:
    """RAW_GET on its own connection; everything the proxy answers, to its close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(RAW_GET)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_workers_share_the_port_and_figures_are_summed(http_backends, tmp_path: Path) -> None:
    # GIVEN two workers serving one listener on one port
    backend = await http_backends("a")
    port = free_port()
    async with running_supervisor(tmp_path, {"listeners": [listener("web", [backend.instance], port=port)]}) as (
        _,
        admin,
    ):
        # WHEN 40 requests arrive, each on its own connection
        answers = [await raw_get(port) for _ in range(40)]
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{admin}/stats?listener=web")).json()
            metrics = (await client.get(f"{admin}/metrics")).text
    # THEN both workers served (each opened its own upstream connection) and the admin port shows the sum:
    # of requests, and of bytes on both sides (what the clients sent and read, what the instance sent)
    assert all(answer.startswith(b"HTTP/1.1 200 OK\r\n") for answer in answers)
    assert backend.connections >= PROCESSES
    assert stats["requests"] == 40
    assert stats["instances"][0]["requests"] == 40
    assert 'berth_lb_requests_total{instance="a",listener="web",status_class="2xx"} 40.0' in metrics
    received = sum(len(answer) for answer in answers)
    assert (stats["bytes_in"], stats["bytes_out"]) == (40 * len(RAW_GET), received)
    assert stats["instances"][0]["bytes_out"] == 40 * len(backend.plain_answer())
    assert f'berth_lb_sent_bytes_total{{listener="web"}} {float(received)}' in metrics
    assert f'berth_lb_received_bytes_total{{listener="web"}} {float(40 * len(RAW_GET))}' in metrics


async def test_health_is_checked_once_and_shared_with_every_worker(http_backends, tmp_path: Path) -> None:
    # GIVEN a checked listener served by two workers
    backend = await http_backends("a")
    port = free_port()
    check = {"path": "/healthz", "interval_seconds": 0.2, "healthy_threshold": 1, "unhealthy_threshold": 1}
    snapshot = {"listeners": [listener("web", [backend.instance], port=port, health_check=check)]}
    async with running_supervisor(tmp_path, snapshot) as (_, admin):
        # WHEN it runs for a while
        checks_before, started = backend.health_checks, time.monotonic()
        await asyncio.sleep(1.2)
        checks, elapsed = backend.health_checks - checks_before, time.monotonic() - started
        # THEN the instance was probed at the interval once, not once per process
        assert checks <= elapsed / 0.2 + 2
        # WHEN the instance starts failing its check
        backend.health_status = 503
        async with httpx.AsyncClient() as client:

            async def reported_healthy() -> bool:
                stats = (await client.get(f"{admin}/stats?listener=web")).json()
                return bool(stats["instances"][0]["healthy"])

            async def reported_unhealthy() -> bool:
                return not await reported_healthy()

            await wait_until_async(reported_unhealthy, timeout=5, message="the failing check was not reported")
            await asyncio.sleep(0.2)  # the verdict travels to the workers
            # THEN every worker stops sending it traffic
            failing = [await fresh_connection_get(f"http://127.0.0.1:{port}/") for _ in range(10)]
            assert {answer.status_code for answer in failing} == {503}
            assert {answer.json()["error"]["code"] for answer in failing} == {"no_healthy_instance"}
            # WHEN it passes again THEN every worker serves it again
            backend.health_status = 200
            await wait_until_async(reported_healthy, timeout=5, message="the passing check was not reported")
            await asyncio.sleep(0.2)
            healthy = [await fresh_connection_get(f"http://127.0.0.1:{port}/") for _ in range(10)]
            assert {answer.status_code for answer in healthy} == {200}


async def test_sigterm_drains_every_worker(http_backends, tmp_path: Path) -> None:
    # GIVEN requests in flight on the workers
    backend = await http_backends("a")
    port = free_port()
    async with running_supervisor(tmp_path, {"listeners": [listener("web", [backend.instance], port=port)]}) as (
        process,
        _,
    ):
        in_flight = [asyncio.create_task(fresh_connection_get(f"http://127.0.0.1:{port}/slow?s=0.8")) for _ in range(6)]
        await wait_until_async(lambda: backend.in_flight == 6)
        # WHEN the supervisor gets SIGTERM
        process.send_signal(signal.SIGTERM)
        # THEN every request in flight is answered, and everything exits cleanly
        answers = await asyncio.gather(*in_flight)
        assert [answer.status_code for answer in answers] == [200] * 6
        async with asyncio.timeout(15):
            assert await process.wait() == 0
        with contextlib.suppress(httpx.TransportError):
            await fresh_connection_get(f"http://127.0.0.1:{port}/")
            raise AssertionError("the port still accepts after the drain")


async def test_a_worker_that_dies_is_replaced(http_backends, tmp_path: Path) -> None:
    backend = await http_backends("a")
    port = free_port()
    async with running_supervisor(tmp_path, {"listeners": [listener("web", [backend.instance], port=port)]}) as (
        _,
        admin,
    ):
        async with httpx.AsyncClient() as client:
            before = (await client.get(f"{admin}/healthz")).json()["workers"]
            # WHEN one worker is killed
            os.kill(before[0], signal.SIGKILL)

            async def replaced() -> bool:
                workers = (await client.get(f"{admin}/healthz")).json()["workers"]
                return len(workers) == PROCESSES and before[0] not in workers

            await wait_until_async(replaced, timeout=10, message="the killed worker was not replaced")
        await asyncio.sleep(0.5)  # the new worker binds the snapshot it was sent
        # THEN a new one takes its place and every connection is served
        answers = [await fresh_connection_get(f"http://127.0.0.1:{port}/") for _ in range(20)]
        assert {answer.status_code for answer in answers} == {200}
