"""Integration tests run against the real services: every test here gets the run's database, Redis key
prefix and local AWS (most reach them through settings, without naming a fixture)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _backing_services(backing_services: None) -> None:
    """Every integration test may talk to PostgreSQL, Redis and moto."""
