"""Rate limits through a real gateway: exactly the limit passes under concurrent load, per IP and per user.

Each test sends from an address of its own in 127.0.0.0/8, so its per-IP bucket starts empty whatever
else the session sent from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningGateway, start_gateway, stop_process
from tests.e2e.conftest import sign_up_and_in

PER_IP = 10
PER_USER = 3


def _fresh_loopback_address() -> str:
    return f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 2}"


@pytest.fixture(scope="module")
def limited_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    running = start_gateway(
        tmp_path_factory.mktemp("limited"),
        {
            "BERTH_GATEWAY_RATE_LIMIT_PER_IP": str(PER_IP),
            "BERTH_GATEWAY_RATE_LIMIT_PER_USER": str(PER_USER),
        },
    )
    yield running
    stop_process(running.process)


async def _concurrently(
    url: str, path: str, count: int, source: str, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client:
        return list(await asyncio.gather(*(client.get(path, headers=headers) for _ in range(count))))


async def test_exactly_the_per_ip_limit_passes_out_of_concurrent_requests(limited_gateway: RunningGateway) -> None:
    responses = await _concurrently(
        limited_gateway.url, "/api/auth/.well-known/jwks.json", 25, _fresh_loopback_address()
    )
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: PER_IP, 429: 25 - PER_IP}
    passed = [r for r in responses if r.status_code == 200]
    assert sorted(int(r.headers["ratelimit-remaining"]) for r in passed) == list(range(PER_IP))
    for response in (r for r in responses if r.status_code == 429):
        assert response.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["ratelimit-limit"] == str(PER_IP)
        assert response.headers["ratelimit-remaining"] == "0"
        assert response.headers["ratelimit-policy"] == f"{PER_IP};w=60"
        assert 1 <= int(response.headers["ratelimit-reset"]) <= 60


async def test_exactly_the_per_user_limit_passes_and_other_users_are_unaffected(
    limited_gateway: RunningGateway,
) -> None:
    users = []
    for _ in range(2):
        transport = httpx.HTTPTransport(local_address=_fresh_loopback_address())
        with httpx.Client(base_url=limited_gateway.url, transport=transport, timeout=30) as client:
            users.append(sign_up_and_in(client))
    first, second = users
    responses = await _concurrently(
        limited_gateway.url, "/api/auth/me", 8, _fresh_loopback_address(), first.auth_headers
    )
    assert Counter(r.status_code for r in responses) == {200: PER_USER, 429: 8 - PER_USER}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["ratelimit-limit"] == str(PER_USER)
    assert "per user" in refused.json()["error"]["message"]
    # same address, another user: the user's bucket is their own
    again = await _concurrently(limited_gateway.url, "/api/auth/me", 1, _fresh_loopback_address(), second.auth_headers)
    assert again[0].status_code == 200


async def test_requests_with_bad_tokens_count_against_their_ip(limited_gateway: RunningGateway) -> None:
    responses = await _concurrently(
        limited_gateway.url, "/api/auth/me", PER_IP + 5, _fresh_loopback_address(), {"Authorization": "Bearer forged"}
    )
    assert Counter(r.status_code for r in responses) == {401: PER_IP, 429: 5}


@pytest.fixture
def gateway_without_redis(tmp_path: Path) -> Iterator[RunningGateway]:
    running = start_gateway(tmp_path, {"BERTH_REDIS_URL": "redis://127.0.0.1:1/0"})
    yield running
    stop_process(running.process)


def test_without_redis_the_gateway_fails_closed(gateway_without_redis: RunningGateway) -> None:
    with httpx.Client(base_url=gateway_without_redis.url, timeout=30) as client:
        response = client.get("/api/auth/.well-known/jwks.json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert response.headers["retry-after"] == "1"
