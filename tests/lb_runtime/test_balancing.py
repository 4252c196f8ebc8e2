"""Balancing through a running proxy: round robin, smooth weighted, least connections, ejection and retry."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.lb_runtime.support import listener, running_lb
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async


async def _spread(url: str, requests: int) -> Counter[str]:
    async with httpx.AsyncClient(base_url=url) as client:
        answers = [await client.get("/") for _ in range(requests)]
    assert all(answer.status_code == 200 for answer in answers)
    return Counter(answer.headers["x-backend"] for answer in answers)


async def test_round_robin_spreads_requests_evenly(http_backends) -> None:
    # GIVEN three instances behind a round-robin listener
    backends = [await http_backends(name) for name in ("a", "b", "c")]
    async with running_lb({"listeners": [listener("web", [b.instance for b in backends])]}) as (runtime, _):
        # WHEN 300 requests go through
        spread = await _spread(f"http://127.0.0.1:{runtime.listener_port('web')}", 300)
    # THEN each instance served exactly a third
    assert spread == {"a": 100, "b": 100, "c": 100}
    assert [b.requests for b in backends] == [100, 100, 100]


async def test_weighted_follows_weights(http_backends) -> None:
    heavy, light = await http_backends("heavy"), await http_backends("light")
    instances = [heavy.instance | {"weight": 3}, light.instance | {"weight": 1}]
    async with running_lb({"listeners": [listener("web", instances, algorithm="weighted")]}) as (runtime, _):
        spread = await _spread(f"http://127.0.0.1:{runtime.listener_port('web')}", 300)
    assert abs(spread["heavy"] - 225) <= 1
    assert abs(spread["light"] - 75) <= 1


async def test_least_connections_avoids_a_slow_instance(http_backends) -> None:
    # GIVEN one instance that takes 0.3 s per request and two fast ones
    slow, fast1, fast2 = await http_backends("slow"), await http_backends("fast1"), await http_backends("fast2")
    slow.delay = 0.3
    snapshot = {
        "listeners": [listener("web", [slow.instance, fast1.instance, fast2.instance], algorithm="least_connections")]
    }
    async with running_lb(snapshot) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"

        async def client_loop(client: httpx.AsyncClient) -> list[str]:
            return [(await client.get("/")).headers["x-backend"] for _ in range(15)]

        # WHEN 6 concurrent clients send 15 requests each
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=6)) as client:
            results = await asyncio.gather(*(client_loop(client) for _ in range(6)))
    spread = Counter(name for seen in results for name in seen)
    # THEN the slow instance got far fewer than its round-robin third (30 of 90)
    assert sum(spread.values()) == 90
    assert spread["slow"] < 15, spread
    assert spread["fast1"] + spread["fast2"] > 75


async def test_refused_connect_is_retried_on_another_instance_and_ejected(http_backends) -> None:
    # GIVEN one live instance and one whose port refuses connections
    live = await http_backends("live")
    dead = {"id": "dead", "address": "127.0.0.1", "port": free_port()}
    async with running_lb({"listeners": [listener("web", [dead, live.instance])]}) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"
        # WHEN requests go through
        spread = await _spread(url, 10)
        stats = runtime.stats("web")
    # THEN none failed: the refused connect was retried on the live instance, and the dead one was ejected
    assert spread == {"live": 10}
    assert stats is not None
    dead_stats = next(i for i in stats["instances"] if i["id"] == "dead")
    assert dead_stats["failures"] == 1
    assert dead_stats["ejected"] is True


async def test_active_health_check_keeps_traffic_off_a_failing_instance(http_backends) -> None:
    good, bad = await http_backends("good"), await http_backends("bad")
    bad.health_status = 500
    check = {"type": "http", "path": "/healthz", "interval_seconds": 0.1, "timeout_seconds": 1}
    snapshot = {"listeners": [listener("web", [good.instance, bad.instance], health_check=check)]}
    async with running_lb(snapshot) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"
        state = runtime.listeners["web"]
        await _wait_probed(state)
        assert await _spread(url, 20) == {"good": 20}
        # WHEN the bad one recovers (two passing checks, the default threshold)
        bad.health_status = 200
        await wait_until_async(
            lambda: all(b.healthy for b in state.balancer.backends), message="the bad instance did not recover"
        )
        # THEN it takes traffic again
        assert await _spread(url, 20) == {"good": 10, "bad": 10}


async def _wait_probed(state) -> None:  # type: ignore[no-untyped-def]
    await wait_until_async(
        lambda: all(b.probed for b in state.balancer.backends), interval=0.02, message="not every instance was probed"
    )
