"""The route table's life: building and rejecting snapshots, live bind/unbind, draining removed instances."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest
from lb_runtime import JsonFileSnapshotSource, LbRuntime, LbSettings, RouteTableError, build_route_table
from lb_runtime.hot_path import HotPathBuild
from lb_runtime.route_table import diff_tables
from lb_runtime.snapshot import Instance

from tests.lb_runtime.support import listener, running_lb
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async


@pytest.mark.parametrize(
    ("snapshot", "problem"),
    [
        ({"listeners": [{"id": "a", "port": 70000}]}, "listeners.0.port"),
        ({"listeners": [{"id": "a", "port": 1, "protocol": "udp"}]}, "listeners.0.protocol"),
        ({"listeners": [{"id": "a", "port": 1, "algorithm": "random"}]}, "listeners.0.algorithm"),
        ({"listeners": [{"id": "a", "port": 1}, {"id": "a", "port": 2}]}, "listener ids repeat"),
        ({"listeners": [{"id": "a", "port": 1}, {"id": "b", "port": 1}]}, "listener ports repeat"),
        (
            {"listeners": [{"id": "a", "port": 1, "instances": [{"id": "i", "address": "h", "port": 1, "weight": 0}]}]},
            "weight",
        ),
        ({"listeners": [{"id": "a", "port": 1, "health_check": {"path": "no-slash"}}]}, "health_check.path"),
        ({"listeners": "nope"}, "listeners"),
    ],
)
def test_invalid_snapshots_are_refused_with_the_reason(snapshot: dict, problem: str) -> None:
    with pytest.raises(RouteTableError, match=problem.replace(".", r"\.")):
        build_route_table(snapshot)


def test_table_diff_names_what_changed() -> None:
    inst = {"id": "i", "address": "127.0.0.1", "port": 9000}
    old = build_route_table(
        {
            "listeners": [
                {"id": "keep", "port": 1},
                {"id": "gone", "port": 2},
                {"id": "moved", "port": 3},
                {"id": "edited", "port": 4},
            ]
        }
    )
    new = build_route_table(
        {
            "listeners": [
                {"id": "keep", "port": 1},
                {"id": "moved", "port": 5},
                {"id": "edited", "port": 4, "instances": [inst]},
                {"id": "new", "port": 6},
            ]
        }
    )
    diff = diff_tables(old, new)
    assert diff.summary() == {"added": ["new"], "removed": ["gone"], "rebound": ["moved"], "changed": ["edited"]}


def test_smooth_weighted_interleaves_like_nginx(hot_path: HotPathBuild) -> None:
    backends = [
        hot_path.backend("l", Instance(id=name, address="h", port=1, weight=w), checked=False)
        for name, w in (("a", 5), ("b", 1), ("c", 1))
    ]
    balancer = hot_path.balancer("weighted", backends)
    picks = []
    for _ in range(7):
        backend = balancer.pick()
        assert backend is not None
        picks.append(backend.id)
    # nginx's documented sequence for weights 5, 1, 1
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]


async def test_bad_snapshot_keeps_the_old_table(http_backends, tmp_path: Path) -> None:
    # GIVEN a proxy reading a JSON file
    backend = await http_backends("a")
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps({"listeners": [listener("web", [backend.instance], port=free_port())]}))
    runtime = LbRuntime(LbSettings(admin_port=0, snapshot_poll_seconds=3600), JsonFileSnapshotSource(path))
    await runtime.start()
    try:
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"
        version = runtime.table.version
        # WHEN the file turns invalid: first not JSON, then a snapshot that fails validation
        for content in ("{not json", json.dumps({"listeners": [{"id": "web", "port": "eighty"}]})):
            path.write_text(content)
            os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 1_000_000))
            # THEN the refresh is refused, the table is kept and traffic still flows
            assert await runtime.refresh() is False
            assert runtime.table.version == version
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/")).status_code == 200
        # AND a valid file afterwards is applied
        path.write_text(json.dumps({"listeners": []}))
        assert await runtime.refresh() is True
        assert runtime.table.version == version + 1
        assert runtime.listeners == {}
    finally:
        await runtime.stop()


async def test_listeners_bind_and_unbind_live(http_backends) -> None:
    a, b = await http_backends("a"), await http_backends("b")
    first = listener("first", [a.instance], port=free_port())
    async with running_lb({"listeners": [first]}) as (runtime, source):
        first_url = f"http://127.0.0.1:{first['port']}"
        async with httpx.AsyncClient(base_url=first_url) as client:
            # a slow request in flight on the first listener while a second one is added
            in_flight = asyncio.create_task(client.get("/slow?s=0.5"))
            await wait_until_async(lambda: a.in_flight == 1)
            second = listener("second", [b.instance], port=free_port())
            source.set({"listeners": [first, second]})
            assert await runtime.refresh()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{second['port']}") as other:
                assert (await other.get("/")).text == "b"
            # WHEN the first listener is removed with its request still in flight
            source.set({"listeners": [second]})
            assert await runtime.refresh()
            # THEN the in-flight request completes, and the port no longer accepts
            answer = await in_flight
            assert answer.status_code == 200
            assert answer.headers["x-backend"] == "a"
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", first["port"])
        # the second listener never noticed
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{second['port']}") as other:
            assert (await other.get("/")).text == "b"


async def test_listener_moves_to_a_new_port(http_backends) -> None:
    a = await http_backends("a")
    web = listener("web", [a.instance], port=free_port())
    async with running_lb({"listeners": [web]}) as (runtime, source):
        moved = web | {"port": free_port()}
        source.set({"listeners": [moved]})
        assert await runtime.refresh()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{moved['port']}") as client:
            assert (await client.get("/")).text == "a"
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", web["port"])


async def test_removed_instance_is_drained(http_backends) -> None:
    # GIVEN two instances with a slow request in flight on "a"
    a, b = await http_backends("a"), await http_backends("b")
    web = listener("web", [a.instance, b.instance])
    async with running_lb({"listeners": [web]}) as (runtime, source):
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"
        async with httpx.AsyncClient(base_url=url) as slow_client, httpx.AsyncClient(base_url=url) as client:
            in_flight = asyncio.create_task(slow_client.get("/slow?s=0.5"))
            await wait_until_async(lambda: a.in_flight == 1)
            # WHEN "a" leaves the snapshot
            source.set({"listeners": [web | {"instances": [b.instance]}]})
            assert await runtime.refresh()
            # THEN new requests all go to "b" while the one in flight on "a" completes
            after = [await client.get("/") for _ in range(10)]
            assert {answer.headers["x-backend"] for answer in after} == {"b"}
            answer = await in_flight
            assert (answer.status_code, answer.headers["x-backend"]) == (200, "a")
            assert a.requests == 1
            # and the drained instance's upstream connection is closed rather than pooled
            await wait_until_async(lambda: a.open_connections == 0)


async def test_the_same_snapshot_again_is_not_a_swap(http_backends) -> None:
    # A database-backed source answers the full snapshot on every poll: only a real change swaps the table.
    backend = await http_backends("a")
    snapshot = {"listeners": [listener("web", [backend.instance])]}
    async with running_lb(snapshot) as (runtime, source):
        version = runtime.table.version
        source.set(json.loads(json.dumps(snapshot)))
        assert await runtime.refresh() is False
        assert runtime.table.version == version
        source.set({"listeners": [listener("web", [backend.instance | {"weight": 2}])]})
        assert await runtime.refresh() is True
        assert runtime.table.version == version + 1
