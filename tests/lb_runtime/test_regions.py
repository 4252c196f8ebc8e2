"""Region-aware routing through running proxies: two "regions" on this machine, each with its own lb-runtime
(BERTH_LB_REGION) and its own instances, one listener policy. Covers the home region, client-region routing by
GeoIP behind a trusted proxy (and an untrusted peer's X-Forwarded-For ignored), Berth-Prefer-Region, fail-over
with zero failed requests and fail-back, overflow to the next region under load (in flight and p95), and an
instance's Berth-Replay answer replaying the request in another region."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from lb_runtime.http_proxy import MAX_REPLAY_BODY, replay_region
from lb_runtime.regions import ClientLocator, window_p95
from lb_runtime.route_table import RouteTableError, build_route_table
from lb_runtime.settings import LbSettings

from tests.lb_runtime.support import HttpBackend, listener, running_lb
from tests.support.waiting import wait_until_async

# geoip2fast's bundled data: 8.8.8.8 is in the US, 81.2.69.142 in the United Kingdom.
US_ADDRESS = "8.8.8.8"
GB_ADDRESS = "81.2.69.142"
COUNTRY_REGIONS = {"GB": "eu", "DE": "eu", "US": "us"}


@dataclass
class KillableBackend(HttpBackend):
    """An HTTP backend whose ``kill`` drops its open connections too (a container stopped, not drained)."""

    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await super()._serve(reader, writer)
        finally:
            self.writers.discard(writer)

    async def kill(self) -> None:
        await self.stop()
        for writer in list(self.writers):
            writer.transport.abort()

    async def restart(self) -> None:
        await self.start()  # same port: self.port was fixed by the first start


@dataclass
class ReplayingBackend(HttpBackend):
    """Answers /replay with 409 and ``Berth-Replay: region=<replay_to>`` while ``replay_to`` is set; keeps what
    reached it (method, headers, body)."""

    replay_to: str | None = None
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def _answer(
        self, writer: asyncio.StreamWriter, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> bool:
        self.received.append((method, headers, body))
        if path == "/replay" and self.replay_to is not None:
            text = b"served elsewhere"
            writer.write(
                b"HTTP/1.1 409 Conflict\r\nX-Backend: %s\r\nBerth-Replay: region=%s\r\nContent-Length: %d\r\n\r\n%s"
                % (self.name.encode(), self.replay_to.encode(), len(text), b"" if method == "HEAD" else text)
            )
            await writer.drain()
            return True
        return await super()._answer(writer, method, path, query, headers, body)


async def _started(*names: str) -> list[KillableBackend]:
    return [await KillableBackend(name).start() for name in names]


def _regional(backends: dict[str, list[KillableBackend]], **policy: Any) -> dict[str, Any]:
    instances = [backend.instance | {"region": region} for region, members in backends.items() for backend in members]
    return {"listeners": [listener("web", instances, regions={"order": ["eu", "us"]} | policy)]}


async def _names(url: str, requests: int, headers: dict[str, str] | None = None) -> Counter[str]:
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        answers = [await client.get("/") for _ in range(requests)]
    assert all(answer.status_code == 200 for answer in answers)
    return Counter(answer.headers["x-backend"] for answer in answers)


async def test_each_region_serves_its_own_and_client_region_follows_the_trusted_proxy() -> None:
    # GIVEN two regions with two instances each and one lb-runtime per region; the listener routes by client region
    eu, us = await _started("eu-1", "eu-2"), await _started("us-1", "us-2")
    snapshot = _regional({"eu": eu, "us": us}, routing="client_region")
    common = {"country_regions": COUNTRY_REGIONS, "trusted_proxies": ("127.0.0.1",)}
    try:
        async with (
            running_lb(snapshot, region="eu", **common) as (lb_eu, _),
            running_lb(snapshot, region="us", **common) as (lb_us, _),
        ):
            url_eu = f"http://127.0.0.1:{lb_eu.listener_port('web')}"
            url_us = f"http://127.0.0.1:{lb_us.listener_port('web')}"
            # WHEN clients with no known location ask each region's lb-runtime
            # THEN each one's requests all reach its own region's instances, round robin among them
            assert await _names(url_eu, 40) == {"eu-1": 20, "eu-2": 20}
            assert await _names(url_us, 40) == {"us-1": 20, "us-2": 20}
            # WHEN a trusted proxy (127.0.0.1) says the client is in the US (and in Britain)
            # THEN eu's lb-runtime sends them to us, and us's to eu
            assert set(await _names(url_eu, 20, {"X-Forwarded-For": US_ADDRESS})) == {"us-1", "us-2"}
            assert set(await _names(url_us, 20, {"X-Forwarded-For": GB_ADDRESS})) == {"eu-1", "eu-2"}
            # A chain: the right-most untrusted hop is the client (a forged left-most entry does not count)
            chain = {"X-Forwarded-For": f"{GB_ADDRESS}, {US_ADDRESS}"}
            assert set(await _names(url_eu, 10, chain)) == {"us-1", "us-2"}
            # WHEN the client asks for a region by header THEN it is served there
            assert set(await _names(url_eu, 10, {"Berth-Prefer-Region": "us"})) == {"us-1", "us-2"}
            # an unknown region in the header is ignored
            assert set(await _names(url_eu, 10, {"Berth-Prefer-Region": "mars"})) == {"eu-1", "eu-2"}
    finally:
        for backend in (*eu, *us):
            await backend.stop()


async def test_an_untrusted_peers_forwarded_for_is_ignored() -> None:
    # GIVEN an lb-runtime that trusts only 10.1.2.3 as a proxy (the test connects from 127.0.0.1)
    eu, us = await _started("eu-1"), await _started("us-1")
    snapshot = _regional({"eu": eu, "us": us}, routing="client_region")
    try:
        async with running_lb(
            snapshot, region="eu", country_regions=COUNTRY_REGIONS, trusted_proxies=("10.1.2.3",)
        ) as (lb, _):
            url = f"http://127.0.0.1:{lb.listener_port('web')}"
            # WHEN a direct client claims a US address THEN it is located by its own address: home region
            assert set(await _names(url, 10, {"X-Forwarded-For": US_ADDRESS})) == {"eu-1"}
    finally:
        for backend in (*eu, *us):
            await backend.stop()


async def test_failover_to_the_next_region_without_failed_requests_and_back() -> None:
    # GIVEN eu's lb-runtime, eu's two instances and us's two; passive ejection of 0.3 s
    eu, us = await _started("eu-1", "eu-2"), await _started("us-1", "us-2")
    try:
        async with running_lb(_regional({"eu": eu, "us": us}), region="eu", eject_seconds=0.3) as (lb, _):
            url = f"http://127.0.0.1:{lb.listener_port('web')}"
            seen: list[tuple[float, str]] = []
            failures: list[str] = []
            stop = asyncio.Event()

            async def stream(client: httpx.AsyncClient) -> None:
                while not stop.is_set():
                    try:
                        answer = await client.get("/")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text}")
                    else:
                        seen.append((time.monotonic(), answer.headers["x-backend"]))

            async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=4)) as client:
                streams = [asyncio.create_task(stream(client)) for _ in range(4)]
                await wait_until_async(lambda: len(seen) > 50, timeout=5, message="no steady stream")
                # WHEN every eu instance is killed under the stream
                killed_at = time.monotonic()
                for backend in eu:
                    await backend.kill()
                await wait_until_async(
                    # (counted from 0.1 s after the kill: the stream below is checked to be all us from there)
                    lambda: sum(1 for ts, name in seen if ts > killed_at + 0.1 and name.startswith("us")) > 50,
                    timeout=5,
                    message="traffic did not move to us",
                )
                moved_at = min(ts for ts, name in seen if ts > killed_at and name.startswith("us"))
                # AND they come back
                for backend in eu:
                    await backend.restart()
                back_at = time.monotonic()
                await wait_until_async(
                    lambda: sum(1 for ts, name in seen if ts > back_at and name.startswith("eu")) > 50,
                    timeout=5,
                    message="traffic did not come back to eu",
                )
                returned_at = min(ts for ts, name in seen if ts > back_at and name.startswith("eu"))
                await asyncio.sleep(1.0)  # the stream goes on: it must stay in eu
                stop.set()
                await asyncio.gather(*streams)
        # THEN no request failed, us took over within 1 s, and eu took its traffic back within 1 s
        assert failures == []
        assert moved_at - killed_at < 1.0
        assert returned_at - back_at < 1.0
        after_kill = [name for ts, name in seen if killed_at + 0.1 < ts < back_at]
        assert after_kill and all(name.startswith("us") for name in after_kill)
        tail = [name for ts, name in seen if ts > returned_at + 0.5]
        assert tail and all(name.startswith("eu") for name in tail)
    finally:
        for backend in (*eu, *us):
            await backend.stop()


async def _spread_for(url: str, clients: int, seconds: float) -> Counter[str]:
    """Requests answered per instance while ``clients`` concurrent clients loop for ``seconds``."""
    deadline = time.monotonic() + seconds

    async def loop(client: httpx.AsyncClient) -> list[str]:
        names = []
        while time.monotonic() < deadline:
            answer = await client.get("/")
            assert answer.status_code == 200
            names.append(answer.headers["x-backend"])
        return names

    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=clients)) as client:
        results = await asyncio.gather(*(loop(client) for _ in range(clients)))
    return Counter(name for seen in results for name in seen)


def _share_of_us(spread: Counter[str]) -> float:
    return spread["us-1"] / sum(spread.values())


@pytest.mark.parametrize(
    ("policy", "clients"),
    [
        # at most 2 requests in flight per healthy eu instance; 3 concurrent clients
        ({"max_in_flight": 2}, 3),
        # eu's p95 over each 0.5 s window at most 50 ms; 2 concurrent clients
        ({"max_p95_ms": 50}, 2),
    ],
    ids=["in_flight", "p95"],
)
async def test_overload_spills_to_the_next_region(policy: dict[str, Any], clients: int) -> None:
    # GIVEN eu's lb-runtime with eu's only instance and one us instance, and a load limit
    eu, us = await _started("eu-1"), await _started("us-1")
    try:
        async with running_lb(_regional({"eu": eu, "us": us}, **policy), region="eu") as (lb, _):
            url = f"http://127.0.0.1:{lb.listener_port('web')}"
            # WHEN eu's instance is fast THEN (almost) everything stays in eu
            fast = await _spread_for(url, clients, 1.5)
            # WHEN eu's instance takes 150 ms per request
            eu[0].delay = 0.15
            slow = await _spread_for(url, clients, 1.5)
            stats = lb.stats("web")
    finally:
        for backend in (*eu, *us):
            await backend.stop()
    # THEN the share sent to us rises from near nothing to most requests, and eu still serves its part
    assert _share_of_us(fast) <= 0.1, fast
    assert _share_of_us(slow) >= 0.5, (fast, slow)
    assert slow["eu-1"] >= 4, slow
    assert stats is not None
    assert {instance["id"]: instance["region"] for instance in stats["instances"]} == {"eu-1": "eu", "us-1": "us"}
    assert set(stats["regions"]) == {"eu", "us"}
    assert stats["regions"]["us"]["requests"] == fast["us-1"] + slow["us-1"]


async def test_a_region_without_a_healthy_instance_is_never_chosen(http_backends) -> None:
    # GIVEN eu's instance unhealthy (its health check fails) and us's healthy
    eu, us = await http_backends("eu-1"), await http_backends("us-1")
    eu.health_status = 500
    check = {"interval_seconds": 0.05, "timeout_seconds": 1, "healthy_threshold": 1, "unhealthy_threshold": 1}
    instances = [eu.instance | {"region": "eu"}, us.instance | {"region": "us"}]
    snapshot = {"listeners": [listener("web", instances, health_check=check, regions={"order": ["eu", "us"]})]}
    async with running_lb(snapshot, region="eu") as (lb, _):
        url = f"http://127.0.0.1:{lb.listener_port('web')}"
        await wait_until_async(lambda: us.health_checks > 1, timeout=5, message="no health check")
        # THEN every request goes to us, even with the client asking for eu
        assert set(await _names(url, 10, {"Berth-Prefer-Region": "eu"})) == {"us-1"}
        # WHEN us goes unhealthy too THEN 503, not a request to an unhealthy instance
        us.health_status = 500
        await wait_until_async(
            lambda: (lb.stats("web") or {})["regions"]["us"]["healthy"] == 0, timeout=5, message="us still healthy"
        )
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/")).status_code == 503
    assert eu.requests == 0


async def test_tcp_listener_prefers_the_home_region() -> None:
    # GIVEN a tcp listener with an instance per region, on us's lb-runtime
    eu, us = await _started("eu-1"), await _started("us-1")
    instances = [eu[0].instance | {"region": "eu"}, us[0].instance | {"region": "us"}]
    snapshot = {"listeners": [listener("raw", instances, protocol="tcp", regions={"order": ["eu", "us"]})]}
    try:
        async with running_lb(snapshot, region="us") as (lb, _):
            # WHEN HTTP goes through it as raw bytes THEN us answers every time
            url = f"http://127.0.0.1:{lb.listener_port('raw')}"
            for _ in range(5):
                async with httpx.AsyncClient(base_url=url) as client:
                    assert (await client.get("/")).headers["x-backend"] == "us-1"
    finally:
        for backend in (*eu, *us):
            await backend.stop()


# --- pure parts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ((), "127.0.0.1", "8.8.8.8", "127.0.0.1"),  # nothing trusted: the peer
        (("10.0.0.0/8",), "127.0.0.1", "8.8.8.8", "127.0.0.1"),  # untrusted peer: its header is ignored
        (("127.0.0.1",), "127.0.0.1", "8.8.8.8", "8.8.8.8"),
        (("127.0.0.1", "10.0.0.0/8"), "127.0.0.1", "1.2.3.4, 8.8.8.8, 10.0.0.7", "8.8.8.8"),  # right-most untrusted
        (("127.0.0.1",), "127.0.0.1", "", "127.0.0.1"),
        (("127.0.0.1",), "127.0.0.1", "garbage", "garbage"),  # not an address: located nowhere (home region)
    ],
)
def test_client_address_believes_only_trusted_proxies(
    trusted: tuple[str, ...], peer: str, forwarded: str, expected: str
) -> None:
    locator = ClientLocator(LbSettings(trusted_proxies=trusted))
    assert locator.client_address(peer.encode(), forwarded.encode()) == expected.encode()


def test_country_table_maps_addresses_to_regions(tmp_path) -> None:
    table = tmp_path / "regions.json"
    table.write_text('{"us": "us-east", "*": "eu"}')
    locator = ClientLocator(LbSettings(country_regions={"GB": "uk"}, country_regions_file=str(table)))
    assert locator.region_of(US_ADDRESS.encode()) == "us-east"  # the file (lower-case codes are fine)
    assert locator.region_of(GB_ADDRESS.encode()) == "uk"  # inline
    assert locator.region_of(b"5.9.0.1") == "eu"  # Germany: the "*" default
    assert locator.region_of(b"not-an-address") == "eu"
    assert ClientLocator(LbSettings()).region_of(US_ADDRESS.encode()) is None  # no table: no client regions


def test_bad_region_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        LbSettings(trusted_proxies=("not-a-network",))
    with pytest.raises(ValueError):
        LbSettings(region="Not A Region")
    with pytest.raises(RouteTableError, match="twice"):
        build_route_table({"listeners": [listener("web", [], regions={"order": ["eu", "eu"]})]})


def test_window_p95() -> None:
    assert window_p95([0] * 15) == 0.0
    assert window_p95([0, 100] + [0] * 13) == 0.001
    assert window_p95([0, 90, 0, 0, 0, 0, 0, 0, 0, 10] + [0] * 5) == 0.5


# --- Berth-Replay -----------------------------------------------------------------------------------------


async def test_berth_replay_serves_the_request_in_the_named_region_once() -> None:
    # GIVEN eu's lb-runtime, eu's instance answering /replay with "Berth-Replay: region=us", and us's instance
    eu, us = await ReplayingBackend("eu-1", replay_to="us").start(), await ReplayingBackend("us-1").start()
    plain = await ReplayingBackend("plain-1", replay_to="us").start()
    snapshot = _regional({"eu": [eu], "us": [us]})  # type: ignore[list-item]
    snapshot["listeners"].append(listener("plain", [plain.instance | {"region": "eu"}]))  # no region policy
    try:
        async with running_lb(snapshot, region="eu") as (lb, _):
            url = f"http://127.0.0.1:{lb.listener_port('web')}"
            async with httpx.AsyncClient(base_url=url) as client:  # one keep-alive connection throughout
                # WHEN a GET, HEAD, DELETE, a PUT with a body and a chunked PUT are answered Berth-Replay by eu
                # THEN us serves each, and the client never sees the header
                small, chunked = b"s" * 10_000, b"c" * 30_000

                async def pieces() -> Any:
                    for start in range(0, len(chunked), 7000):
                        yield chunked[start : start + 7000]

                answers = [
                    await client.get("/replay"),
                    await client.head("/replay"),
                    await client.delete("/replay"),
                    await client.put("/replay", content=small),
                    await client.put("/replay", content=pieces()),
                ]
                for answer in answers:
                    assert (answer.status_code, answer.headers["x-backend"]) == (200, "us-1"), answer.text
                    assert "berth-replay" not in answer.headers
                # AND us got each request whole, marked as a replay from eu
                assert [method for method, _, _ in us.received] == ["GET", "HEAD", "DELETE", "PUT", "PUT"]
                assert all(headers["berth-replayed-from"] == "eu" for _, headers, _ in us.received)
                assert [body for _, _, body in us.received][3:] == [small, chunked]
                assert len(eu.received) == 5

                # WHEN the request may not be replayed: a POST, or a PUT with more body than is kept
                # THEN eu's answer goes to the client as it is, header included
                for answer in (
                    await client.post("/replay", content=b"x"),
                    await client.put("/replay", content=b"b" * (MAX_REPLAY_BODY + 1)),
                ):
                    assert (answer.status_code, answer.headers["x-backend"]) == (409, "eu-1")
                    assert answer.headers["berth-replay"] == "region=us" and answer.text == "served elsewhere"
                # WHEN it names a region with no instance THEN the same
                eu.replay_to = "mars"
                assert (await client.get("/replay")).headers["x-backend"] == "eu-1"

                # WHEN us answers Berth-Replay too (back to eu) THEN there is no second replay: us's answer goes out
                eu.replay_to, us.replay_to = "us", "eu"
                before = len(eu.received)
                looped = await client.get("/replay")
                assert (looped.status_code, looped.headers["x-backend"]) == (409, "us-1")
                assert looped.headers["berth-replay"] == "region=eu"
                assert len(eu.received) == before + 1
                # AND the connection goes on serving ordinary requests
                assert (await client.get("/")).headers["x-backend"] == "eu-1"

            # WHEN the listener has no region policy THEN Berth-Replay is passed through
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{lb.listener_port('plain')}") as client:
                answer = await client.get("/replay")
                assert (answer.status_code, answer.headers["berth-replay"]) == (409, "region=us")
    finally:
        for backend in (eu, us, plain):
            await backend.stop()


async def test_berth_replay_to_a_region_without_a_healthy_instance_answers_the_original() -> None:
    # GIVEN eu's instance asking for us, and us's instance failing its health check
    eu, us = await ReplayingBackend("eu-1", replay_to="us").start(), await ReplayingBackend("us-1").start()
    us.health_status = 500
    check = {"interval_seconds": 0.05, "timeout_seconds": 1, "healthy_threshold": 1, "unhealthy_threshold": 1}
    instances = [eu.instance | {"region": "eu"}, us.instance | {"region": "us"}]
    snapshot = {"listeners": [listener("web", instances, health_check=check, regions={"order": ["eu", "us"]})]}
    try:
        async with running_lb(snapshot, region="eu") as (lb, _):
            await wait_until_async(
                lambda: (lb.stats("web") or {}).get("regions", {}).get("us", {}).get("healthy") == 0,
                timeout=5,
                message="us still healthy",
            )
            # WHEN eu answers Berth-Replay: region=us THEN its own answer goes out, and us gets nothing
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{lb.listener_port('web')}") as client:
                answer = await client.get("/replay")
            assert (answer.status_code, answer.headers["x-backend"]) == (409, "eu-1")
            assert answer.headers["berth-replay"] == "region=us"
            assert us.received == []
    finally:
        for backend in (eu, us):
            await backend.stop()


@pytest.mark.parametrize(
    ("value", "region"),
    [(b"region=us", "us"), (b" Region = EU-West ; state=abc", "eu-west"), (b"state=1", ""), (b"", "")],
)
def test_replay_region_reads_the_header(value: bytes, region: str) -> None:
    assert replay_region(value) == region
