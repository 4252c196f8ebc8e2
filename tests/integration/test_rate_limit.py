"""The rate limiter against the real Redis: exact under concurrency, all-or-nothing, fail closed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from gateway.rate_limit import Bucket, RateLimiter, RateLimiterUnavailable
from shared.cache import KeySpace
from shared.config import get_function_settings
from shared.errors import RateLimited


@pytest.fixture
async def limiter() -> AsyncIterator[RateLimiter]:
    settings = get_function_settings()
    # A prefix of the test's own inside the session's, so its keys are found and removed exactly.
    keys = KeySpace(f"{settings.redis_prefix}rl-{secrets.token_hex(4)}:")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield RateLimiter(client, keys)
    found = [key async for key in client.scan_iter(match=keys.prefix + "*")]
    if found:
        await client.delete(*found)
    await client.aclose()


async def test_exactly_the_limit_passes_out_of_50_concurrent_requests(limiter: RateLimiter) -> None:
    bucket = Bucket("ip", "198.51.100.7", limit=20, window_seconds=60)
    decisions = await asyncio.gather(*(limiter.hit([bucket]) for _ in range(50)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 20
    assert sorted(d.states[0].remaining for d in allowed) == list(range(20))
    refused = [d for d in decisions if not d.allowed]
    assert len(refused) == 30
    for decision in refused:
        assert decision.blocking is not None
        assert decision.blocking.remaining == 0
        assert 1 <= decision.blocking.reset_seconds <= 60
        with pytest.raises(RateLimited):
            decision.raise_if_refused()


async def test_a_refused_request_consumes_nothing_from_its_other_buckets(limiter: RateLimiter) -> None:
    ip = Bucket("ip", "198.51.100.8", limit=100, window_seconds=60)
    user = Bucket("user", "user-1", limit=3, window_seconds=60)
    for _ in range(3):
        assert (await limiter.hit([ip, user])).allowed
    decisions = await asyncio.gather(*(limiter.hit([ip, user]) for _ in range(10)))
    assert not any(d.allowed for d in decisions)
    assert all(d.blocking is not None and d.blocking.bucket == user for d in decisions)
    # the IP bucket saw only the three requests that passed
    alone = await limiter.hit([ip])
    assert alone.allowed
    assert alone.states[0].remaining == 100 - 4


async def test_buckets_are_separate_per_identity_and_scope(limiter: RateLimiter) -> None:
    first = Bucket("ip", "198.51.100.9", limit=1, window_seconds=60)
    other_ip = Bucket("ip", "198.51.100.10", limit=1, window_seconds=60)
    other_scope = Bucket("ip", "198.51.100.9", limit=1, window_seconds=60, scope="POST /api/auth/signin")
    assert (await limiter.hit([first])).allowed
    assert not (await limiter.hit([first])).allowed
    assert (await limiter.hit([other_ip])).allowed
    assert (await limiter.hit([other_scope])).allowed


async def test_a_window_opens_again_after_it_expires(limiter: RateLimiter) -> None:
    bucket = Bucket("user", "user-2", limit=2, window_seconds=1)
    assert (await limiter.hit([bucket])).allowed
    assert (await limiter.hit([bucket])).allowed
    refused = await limiter.hit([bucket])
    assert not refused.allowed
    assert refused.headers()["Retry-After"] == "1"
    await asyncio.sleep(1.1)  # part of the check: past the window (polling with hits would count them)
    assert (await limiter.hit([bucket])).allowed


async def test_the_limiter_fails_closed_when_redis_is_unreachable() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        with pytest.raises(RateLimiterUnavailable) as caught:
            await RateLimiter(client, KeySpace("unused:")).hit([Bucket("ip", "x", 1, 60)])
        assert caught.value.status == 503
        assert caught.value.headers["Retry-After"] == "1"
    finally:
        await client.aclose()
