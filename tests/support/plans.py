"""Putting a test user on the plan that allows what the test runs, the way an operator would.

The free plan allows 3 containers (shared/migrations' ``plans`` rows); a test that runs more is a paying
customer's scenario, so its user is moved to ``pro`` through billing's admin route
(``PATCH /api/admin/users/{id}``) by an admin the helper signs up — the plan figures are never bent to fit a
test. The admin role itself has no API (it is granted in the database, as ``berth-admin grant-admin`` does).
The plan is read from the database on every quota check, so the change applies at once; the user's tokens
still name the old plan until they sign in again, which is why the fresh headers are returned.
"""

from __future__ import annotations

import secrets

import httpx
import psycopg


def _sign_up_and_in(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    created = client.post("/api/auth/signup", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    return {"id": created.json()["id"], **_tokens(client, email, password)}


def _tokens(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    answer = client.post("/api/auth/signin", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return {"access_token": body["access_token"], "refresh_token": body["refresh_token"]}


def move_to_plan(
    client: httpx.Client, database_url: str, user_id: str, plan: str = "pro", *, email: str, password: str
) -> dict[str, str]:
    """Put ``user_id`` on ``plan`` through the admin API; return the user's fresh tokens (naming the plan)."""
    admin_email = f"plan-admin-{secrets.token_hex(5)}@example.com"
    admin_password = "plan admin " + secrets.token_hex(6)
    admin = _sign_up_and_in(client, admin_email, admin_password)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE users SET role = 'admin' WHERE id = %s", (admin["id"],))
    # Signed in again: the role is in the token.
    headers = {"Authorization": f"Bearer {_tokens(client, admin_email, admin_password)['access_token']}"}
    moved = client.patch(f"/api/admin/users/{user_id}", json={"plan": plan}, headers=headers)
    assert moved.status_code == 200, moved.text
    assert moved.json()["plan"] == plan, moved.text
    return _tokens(client, email, password)
