"""Containers in regions, through the containers function (ASGI) against the real PostgreSQL and moto: a
container asked for a region is placed on a host of that region and answers it; a region no host belongs to
is a 422, one whose hosts are all down a 503."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from tests.integration import test_containers_api as containers_api
from tests.integration.test_containers_api import _create, _sql

# The containers API tests' fixtures: the app with real tokens, two users, an image and a live host.
api = containers_api.api
world = containers_api.world


async def test_a_container_runs_in_the_region_it_asks_for(api: httpx.AsyncClient, world: dict[str, Any]) -> None:
    # GIVEN the test's live host in a region of its own
    region = f"r{secrets.token_hex(4)}"
    _sql("UPDATE hosts SET region = %s WHERE id = %s", (region, world["host_id"]))
    # WHEN a container is created for that region
    answer = await _create(api, world, {"name": f"geo-{secrets.token_hex(3)}", "region": region})
    # THEN it is placed on that region's host and says so
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["host_id"], body["region"], body["requested_region"]) == (world["host_id"], region, region)
    fetched = await api.get(f"/api/containers/{body['id']}", headers=world["owner"].headers)
    assert fetched.json()["region"] == region


async def test_unknown_or_unreachable_regions_are_refused(api: httpx.AsyncClient, world: dict[str, Any]) -> None:
    # GIVEN a region whose only host stopped heartbeating long ago
    silent_region, silent_host = f"r{secrets.token_hex(4)}", f"test-host-{secrets.token_hex(6)}"
    _sql(
        "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb, region, heartbeat_at) "
        "VALUES (%s, '127.0.0.1', 1, 512, %s, now() - interval '1 hour')",
        (silent_host, silent_region),
    )
    try:
        # WHEN / THEN a region no host belongs to: 422 naming the field
        unknown = await _create(api, world, {"name": "geo-unknown", "region": "no-such-region-here"})
        assert unknown.status_code == 422, unknown.text
        assert "region" in unknown.text
        # a name that is not a region name: 422 from validation
        malformed = await _create(api, world, {"name": "geo-bad", "region": "Not_A_Region"})
        assert malformed.status_code == 422, malformed.text
        # a region whose hosts are all down: 503, nothing created
        down = await _create(api, world, {"name": "geo-down", "region": silent_region})
        assert down.status_code == 503, down.text
        assert silent_region in down.json()["error"]["message"]
        listed = await api.get("/api/containers", headers=world["owner"].headers)
        assert not [item for item in listed.json()["items"] if item["name"].startswith("geo-")]
    finally:
        _sql("DELETE FROM hosts WHERE id = %s", (silent_host,))
