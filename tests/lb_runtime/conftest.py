"""Fixtures for lb-runtime: running HTTP backends, stopped after each test; every test runs against both
builds of the per-request code (compiled, when built, and pure Python)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from lb_runtime.hot_path import PYTHON_BUILD, HotPathBuild, compiled_build

from tests.lb_runtime.support import HttpBackend


@pytest.fixture(autouse=True, params=["compiled", "python"])
def hot_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> HotPathBuild:
    """The build under test; BERTH_LB_HOT_PATH makes every LbSettings of the test choose it."""
    if request.param == "compiled":
        build = compiled_build()
        if build is None:
            pytest.skip("compiled hot path not built (.venv/bin/python lb-runtime/build_hot_path.py)")
    else:
        build = PYTHON_BUILD
    monkeypatch.setenv("BERTH_LB_HOT_PATH", request.param)
    return build


@pytest.fixture
async def http_backends() -> AsyncIterator[Callable[..., Awaitable[HttpBackend]]]:
    """A factory of started HTTP backends (``await http_backends("a")``), all stopped after the test."""
    started: list[HttpBackend] = []

    async def start(name: str) -> HttpBackend:
        backend = await HttpBackend(name).start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.stop()
