"""Fixtures for lb-runtime: running HTTP backends, stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.lb_runtime.support import HttpBackend


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
