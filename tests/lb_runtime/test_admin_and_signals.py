"""The admin port (/metrics, /healthz, /stats) and the process's graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.lb_runtime.support import listener, running_lb
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async

PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def test_metrics_stats_and_healthz(http_backends) -> None:
    a, b = await http_backends("a"), await http_backends("b")
    async with running_lb({"listeners": [listener("web", [a.instance, b.instance])]}) as (runtime, _):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.listener_port('web')}") as client:
            for _ in range(10):
                assert (await client.get("/")).status_code == 200
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.admin_port}") as admin:
            metrics = (await admin.get("/metrics")).text
            stats = (await admin.get("/stats")).json()
            one = (await admin.get("/stats", params={"listener": "web"})).json()
            missing = await admin.get("/stats", params={"listener": "nope"})
            health = (await admin.get("/healthz")).json()
            not_found = await admin.get("/nothing")
    assert 'berth_lb_requests_total{instance="a",listener="web",status_class="2xx"} 5.0' in metrics
    assert 'berth_lb_requests_total{instance="b",listener="web",status_class="2xx"} 5.0' in metrics
    assert 'berth_lb_request_duration_seconds_count{instance="a",listener="web"} 5.0' in metrics
    assert 'berth_lb_instance_healthy{instance="a",listener="web"} 1.0' in metrics
    assert "berth_lb_active_connections" in metrics
    assert stats["listeners"][0] == one
    assert one["requests"] == 10
    assert one["errors"] == 0
    assert set(one["latency_ms"]) == {"p50", "p95", "p99"}
    assert one["latency_ms"]["p50"] > 0
    assert [i["id"] for i in one["instances"]] == ["a", "b"]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert health["status"] == "ok"
    assert health["listeners"] == 1
    assert not_found.status_code == 404


async def test_metrics_count_errors_by_class() -> None:
    dead = {"id": "dead", "address": "127.0.0.1", "port": free_port()}
    async with running_lb({"listeners": [listener("web", [dead])]}, eject_seconds=0) as (runtime, _):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.listener_port('web')}") as client:
            for _ in range(3):
                assert (await client.get("/")).status_code == 502
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.admin_port}") as admin:
            metrics = (await admin.get("/metrics")).text
            stats = (await admin.get("/stats", params={"listener": "web"})).json()
    assert 'berth_lb_requests_total{instance="dead",listener="web",status_class="5xx"} 3.0' in metrics
    assert 'berth_lb_upstream_failures_total{instance="dead",listener="web"} 3.0' in metrics
    assert stats["errors"] == 3


@pytest.mark.parametrize("signum", [signal.SIGTERM])
async def test_sigterm_finishes_in_flight_requests_and_exits_0(http_backends, tmp_path: Path, signum: int) -> None:
    # GIVEN the proxy as its own process (uvloop, JSON file snapshot), with a slow request in flight
    backend = await http_backends("a")
    port, admin_port = free_port(), free_port()
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps({"listeners": [listener("web", [backend.instance], port=port)]}))
    env = os.environ | {"BERTH_LB_LOG_LEVEL": "WARNING", "BERTH_LB_SNAPSHOT_POLL_SECONDS": "0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lb_runtime", "--snapshot", str(snapshot), "--admin-port", str(admin_port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as admin:

            async def healthy() -> bool:
                return (await admin.get(f"http://127.0.0.1:{admin_port}/healthz")).status_code == 200

            await wait_until_async(
                healthy, timeout=20, interval=0.1, ignoring=(httpx.TransportError,), message="lb-runtime did not start"
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/")).status_code == 200
            in_flight = asyncio.create_task(client.get("/slow?s=1"))
            await wait_until_async(lambda: backend.in_flight == 1)
            # WHEN SIGTERM arrives
            process.send_signal(signum)

            # THEN new connections are refused soon, the request in flight completes, and the exit code is 0
            async def refused() -> bool:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    return True
                writer.close()
                return False

            await wait_until_async(refused, timeout=5, message="the listener still accepts after SIGTERM")
            answer = await in_flight
            assert answer.status_code == 200
            assert answer.text == "a"
        returncode = await asyncio.to_thread(process.wait, 10)
        assert returncode == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
