"""The document's per-IP and per-user limits hold without the local gateway counting them (as on API
Gateway): the functions count them themselves. With both counting, a request is counted once."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from tests.conftest import RunningGateway, start_gateway, stop_process
from tests.e2e.conftest import sign_up_and_in

# The route-wide buckets: sign-up and sign-in count in buckets of their own (their document override).
PER_IP = 5
PER_USER = 3


def _clear_prefix(prefix: str) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def gateway_of_own(tmp_path: Path, test_database: str) -> Iterator[Any]:
    """Started by the test with the settings it passes; its Redis keys and users removed afterwards."""
    started: list[tuple[RunningGateway, str]] = []

    def start(**env: str) -> RunningGateway:
        prefix = f"berth-test-limits-{secrets.token_hex(4)}:"
        directory = tmp_path / prefix.strip(":")
        directory.mkdir()
        running = start_gateway(directory, {"BERTH_REDIS_PREFIX": prefix, **env})
        started.append((running, prefix))
        return running

    yield start
    for running, prefix in started:
        stop_process(running.process)
        _clear_prefix(prefix)
    with psycopg.connect(test_database) as conn:
        conn.execute("DELETE FROM users WHERE email LIKE 'limits-%%'")


# The test's requests come from an address of their own: the gateway's start-up probe (from 127.0.0.1, some
# possibly still landing after a cold start) counts against its own IP, not the test's.
CLIENT_IP = "127.0.0.2"


def _client(running: RunningGateway) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=CLIENT_IP)
    return httpx.Client(base_url=running.url, timeout=30, transport=transport)


def _sign_up(client: httpx.Client) -> dict[str, str]:
    user = sign_up_and_in(client, f"limits-{secrets.token_hex(6)}@example.com")
    return user.auth_headers


def test_functions_alone_refuse_past_the_per_user_and_per_ip_limits(gateway_of_own: Any) -> None:
    # GIVEN a gateway whose own limits are off, and functions limited to PER_IP per IP and PER_USER per user
    running = gateway_of_own(
        BERTH_GATEWAY_RATE_LIMITS="false",
        BERTH_RATE_LIMIT_PER_IP=str(PER_IP),
        BERTH_RATE_LIMIT_PER_USER=str(PER_USER),
    )
    with _client(running) as client:
        first = _sign_up(client)
        second = _sign_up(client)

        # WHEN one user goes past their limit (a refused request consumes nothing)
        answers = [client.get("/api/auth/me", headers=first) for _ in range(PER_USER + 1)]

        # THEN the function refused the last one, per user, with the RateLimit headers
        assert [a.status_code for a in answers] == [200] * PER_USER + [429], [a.text for a in answers]
        refused = answers[-1]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["ratelimit-limit"] == str(PER_USER)
        assert refused.headers["ratelimit-remaining"] == "0"
        assert int(refused.headers["retry-after"]) >= 1
        assert answers[0].headers["ratelimit-limit"] in (str(PER_USER), str(PER_IP))

        # AND the IP's limit stops another user from the same address, within their own per-user limit
        others = [client.get("/api/auth/me", headers=second) for _ in range(PER_IP - PER_USER + 1)]
        store = redis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
        seen = {k: store.get(k) for k in store.scan_iter(match=running.env["BERTH_REDIS_PREFIX"] + "ratelimit:*")}
        assert [a.status_code for a in others] == [200] * (PER_IP - PER_USER) + [429], (seen, [a.text for a in others])
        assert "per ip" in others[-1].json()["error"]["message"]
        assert others[-1].headers["ratelimit-limit"] == str(PER_IP)


def test_with_both_counting_a_request_is_counted_once(gateway_of_own: Any) -> None:
    # GIVEN the gateway and the functions both limiting, with the same numbers
    running = gateway_of_own(
        BERTH_GATEWAY_RATE_LIMIT_PER_IP="1000",
        BERTH_GATEWAY_RATE_LIMIT_PER_USER="1000",
        BERTH_RATE_LIMIT_PER_IP="1000",
        BERTH_RATE_LIMIT_PER_USER="1000",
    )
    prefix = running.env["BERTH_REDIS_PREFIX"]
    with _client(running) as client:
        headers = _sign_up(client)

        # WHEN a user makes five requests
        answers = [client.get("/api/auth/me", headers=headers) for _ in range(5)]

    # THEN the user's bucket counted five, not ten, and the answers said so
    assert [a.status_code for a in answers] == [200] * 5
    store = redis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
    user_keys = [key for key in store.scan_iter(match=prefix + "ratelimit:user:*")]
    assert len(user_keys) == 1
    assert store.get(user_keys[0]) == "5"
    ip_keys = [key for key in store.scan_iter(match=prefix + f"ratelimit:ip:*:{CLIENT_IP}")]
    assert sum(int(store.get(key) or 0) for key in ip_keys) == 2 + 5  # sign-up, sign-in, five requests
    store.close()
    assert answers[-1].headers["ratelimit-remaining"] == str(1000 - 5)
