"""Choosing the build of the per-request code: compiled when built and current, pure Python otherwise."""

from __future__ import annotations

import importlib
from bisect import bisect_left

import httpx
import pytest
from lb_runtime import hot_path
from lb_runtime.hot_path import PYTHON_BUILD, HotPathBuild, HotPathUnavailable, select_build
from lb_runtime.snapshot import Instance

from tests.lb_runtime.support import listener, running_lb


def test_python_is_forced_by_the_setting() -> None:
    assert select_build("python") is PYTHON_BUILD


def test_a_stale_build_is_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN sources that differ from what the extensions were compiled from
    monkeypatch.setattr(hot_path, "_sources_digest", lambda: "edited since the build")
    # WHEN a runtime asks for a build
    # THEN auto falls back to pure Python and compiled refuses to start
    assert select_build("auto") is PYTHON_BUILD
    with pytest.raises(HotPathUnavailable):
        select_build("compiled")


async def test_runtime_reports_the_build_it_serves_with(http_backends, hot_path: HotPathBuild) -> None:
    backend = await http_backends("a")
    async with (
        running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _),
        httpx.AsyncClient() as client,
    ):
        health = (await client.get(f"http://127.0.0.1:{runtime.admin_port}/healthz")).json()
        answer = await client.get(f"http://127.0.0.1:{runtime.listener_port('web')}/")
    assert health["hot_path"] == hot_path.name
    assert answer.status_code == 200
    assert isinstance(runtime.listeners["web"].stats, hot_path.listener_stats)


def test_latency_buckets_are_those_of_bisect_left_on_either_build(hot_path: HotPathBuild) -> None:
    # The compiled histogram walks the bounds in C instead of calling bisect: the same bucket for every value,
    # bounds themselves included (a bound belongs to its own bucket, as in Prometheus' "le").
    stats = importlib.import_module(hot_path.listener_stats.__module__)
    bounds = stats.LATENCY_BUCKETS
    values = [0.0, 1e-6, *bounds, *(bound * 0.999 for bound in bounds), *(bound * 1.001 for bound in bounds), 1e6]
    assert [stats.latency_bucket(value) for value in values] == [bisect_left(bounds, value) for value in values]
    backend = hot_path.backend("web", Instance(id="a", address="127.0.0.1", port=8080), checked=False)
    backend.stats = hot_path.listener_stats()
    backend.record(200, 0.003)
    backend.record(503, 20.0)
    assert backend.bucket_counts == [0, 0, 0, 1] + [0] * (len(bounds) - 4) + [1]
    assert (backend.stats.requests, backend.stats.errors) == (2, 1)
