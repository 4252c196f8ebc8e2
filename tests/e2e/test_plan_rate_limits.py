"""Per-plan API rate limits through a real gateway: a user on a plan with a small figure
(``plans.api_requests_per_minute``) is refused sooner than one on a plan without (who gets the route's
limit, the ceiling), whether the gateway counts or the functions do, and a request is counted once when
both are on. An admin edits the figure like any other plan field."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis

from tests.e2e.test_function_limits import CLIENT_IP, _client, gateway_of_own  # noqa: F401 (a fixture)

ROUTE_PER_USER = 6
SLOW_PLAN_PER_MINUTE = 3


@pytest.fixture
def plans(test_database: str) -> Iterator[dict[str, str]]:
    """Two plans of the test's own: "slow" allows SLOW_PLAN_PER_MINUTE requests a minute, "fast" has no
    figure (the route's limit applies)."""
    names = {"slow": f"t-slow-{secrets.token_hex(3)}", "fast": f"t-fast-{secrets.token_hex(3)}"}
    with psycopg.connect(test_database, autocommit=True) as conn:
        for kind, name in names.items():
            conn.execute(
                "INSERT INTO plans (name, max_containers, max_memory_mb_per_container, max_memory_mb_total, "
                "max_listeners, max_image_storage_mb, api_requests_per_minute) VALUES (%s, 1, 256, 256, 1, 10, %s)",
                (name, SLOW_PLAN_PER_MINUTE if kind == "slow" else None),
            )
    yield names
    with psycopg.connect(test_database, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE plan = ANY(%s)", (list(names.values()),))
        conn.execute("DELETE FROM plans WHERE name = ANY(%s)", (list(names.values()),))


def _user_on(client: httpx.Client, database: str, plan: str, role: str = "user") -> tuple[str, dict[str, str]]:
    """A new user put on ``plan`` (and ``role``), signed in afterwards so the token names the plan."""
    email, password = f"limits-{secrets.token_hex(6)}@example.com", "plan limits " + secrets.token_hex(4)
    created = client.post("/api/auth/signup", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE users SET plan = %s, role = %s WHERE id = %s", (plan, role, created.json()["id"]))
    signed_in = client.post("/api/auth/signin", json={"email": email, "password": password})
    assert signed_in.status_code == 200, signed_in.text
    return created.json()["id"], {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


@pytest.mark.parametrize("counted_by", ["gateway", "functions"])
def test_a_smaller_plan_is_refused_sooner_and_each_request_counts_once(
    gateway_of_own: Any,  # noqa: F811
    plans: dict[str, str],
    test_database: str,
    counted_by: str,
) -> None:
    # GIVEN the route's per-user limit at ROUTE_PER_USER for both counters; the gateway's own off or on
    env = {
        "BERTH_GATEWAY_RATE_LIMIT_PER_IP": "1000",
        "BERTH_GATEWAY_RATE_LIMIT_PER_USER": str(ROUTE_PER_USER),
        "BERTH_RATE_LIMIT_PER_IP": "1000",
        "BERTH_RATE_LIMIT_PER_USER": str(ROUTE_PER_USER),
    }
    if counted_by == "functions":
        env["BERTH_GATEWAY_RATE_LIMITS"] = "false"
    running = gateway_of_own(**env)
    prefix = running.env["BERTH_REDIS_PREFIX"]
    with _client(running) as client:
        slow_id, slow = _user_on(client, test_database, plans["slow"])
        fast_id, fast = _user_on(client, test_database, plans["fast"])

        # WHEN each makes more requests than the route allows
        slow_answers = [client.get("/api/auth/me", headers=slow).status_code for _ in range(ROUTE_PER_USER + 1)]
        fast_answers = [client.get("/api/auth/me", headers=fast).status_code for _ in range(ROUTE_PER_USER + 1)]
        refused = client.get("/api/auth/me", headers=slow)

    # THEN the slow plan's user is refused after its plan's figure, the other after the route's limit
    assert slow_answers == [200] * SLOW_PLAN_PER_MINUTE + [429] * (ROUTE_PER_USER + 1 - SLOW_PLAN_PER_MINUTE)
    assert fast_answers == [200] * ROUTE_PER_USER + [429]
    assert refused.headers["ratelimit-limit"] == str(SLOW_PLAN_PER_MINUTE)
    # AND each user's bucket counted each passed request once (whether one counter or two were on)
    store = redis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
    counts = {
        user_id: [store.get(key) for key in store.scan_iter(match=f"{prefix}ratelimit:user:*:{user_id}")]
        for user_id in (slow_id, fast_id)
    }
    store.close()
    assert counts == {slow_id: [str(SLOW_PLAN_PER_MINUTE)], fast_id: [str(ROUTE_PER_USER)]}


def test_an_admin_edits_a_plans_rate_limit(client: httpx.Client, plans: dict[str, str], test_database: str) -> None:
    # GIVEN an admin
    _, admin = _user_on(client, test_database, plans["fast"], role="admin")

    # WHEN they set the plan's figure, THEN the plan answers it, and the caller's plan shows it
    changed = client.patch(f"/api/admin/plans/{plans['fast']}", json={"api_requests_per_minute": 90}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["api_requests_per_minute"] == 90
    mine = client.get("/api/billing/plan", headers=admin)
    assert mine.status_code == 200, mine.text
    assert mine.json()["plan"]["api_requests_per_minute"] == 90
    # AND a figure of zero is refused
    zero = client.patch(f"/api/admin/plans/{plans['fast']}", json={"api_requests_per_minute": 0}, headers=admin)
    assert zero.status_code == 422, zero.text
