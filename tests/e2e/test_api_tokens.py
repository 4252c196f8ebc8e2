"""Personal access tokens through the local gateway: created once, listed without secrets, scoped, revoked
and expired at once, their use recorded, and never in a log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import UNLIMITED, start_gateway, stop_process
from tests.e2e.conftest import SignedInUser, sign_up_and_in


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_token(client: httpx.Client, user: SignedInUser, scopes: list[str], name: str = "ci") -> dict[str, Any]:
    answer = client.post(
        "/api/auth/tokens", headers=user.auth_headers, json={"name": name, "scopes": scopes, "expires_in_days": 30}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


@pytest.fixture
def user(client: httpx.Client, test_database: str) -> Any:
    signed_in = sign_up_and_in(client)
    yield signed_in
    with psycopg.connect(test_database) as conn:
        conn.execute("DELETE FROM users WHERE id = %s", (signed_in.id,))


def test_token_is_shown_once_listed_without_secret_and_its_use_recorded(
    client: httpx.Client, user: SignedInUser, test_database: str
) -> None:
    # GIVEN a deploy token
    created = create_token(client, user, ["deploy", "read"])
    assert set(created) == {"id", "name", "scopes", "expires_at", "token"}
    assert created["scopes"] == ["deploy", "read"]

    # WHEN it is used
    me = client.get("/api/auth/me", headers=bearer(created["token"]))

    # THEN it acts as its user (never as an admin), only its hash is stored, and the listing has no secret
    assert me.status_code == 200 and me.json()["id"] == user.id
    listed = client.get("/api/auth/tokens", headers=user.auth_headers).json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]
    assert "token" not in listed[0] and created["token"] not in str(listed)
    assert listed[0]["last_used_ip"] == "127.0.0.1" and listed[0]["last_used_at"]
    with psycopg.connect(test_database) as conn:
        row = conn.execute("SELECT token_hash FROM api_tokens WHERE id = %s", (created["id"],)).fetchone()
    assert row is not None and created["token"].encode() not in bytes(row[0])


def test_read_token_cannot_deploy_and_no_token_manages_tokens(client: httpx.Client, user: SignedInUser) -> None:
    read = create_token(client, user, ["read"])["token"]

    listed = client.get("/api/images", headers=bearer(read))
    refused = client.post("/api/images", headers=bearer(read), json={"name": "web", "tag": "1"})
    containers = client.post("/api/containers", headers=bearer(read), json={"image_id": "x", "name": "web"})
    tokens = client.post(
        "/api/auth/tokens", headers=bearer(read), json={"name": "more", "scopes": ["deploy"], "expires_in_days": 1}
    )

    assert listed.status_code == 200
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
    assert containers.status_code == 403
    assert tokens.status_code == 403 and tokens.json()["error"]["code"] == "session_required"
    deploy = create_token(client, user, ["deploy"], name="deployer")["token"]
    made = client.post("/api/images", headers=bearer(deploy), json={"name": "web", "tag": "1"})
    assert made.status_code == 201, made.text


def test_revoked_and_expired_tokens_are_refused_at_once(
    client: httpx.Client, user: SignedInUser, test_database: str
) -> None:
    revoked = create_token(client, user, ["read"], name="soon-revoked")
    expired = create_token(client, user, ["read"], name="soon-expired")
    assert client.get("/api/images", headers=bearer(revoked["token"])).status_code == 200

    gone = client.delete(f"/api/auth/tokens/{revoked['id']}", headers=user.auth_headers)
    with psycopg.connect(test_database) as conn:
        conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s", (expired["id"],))

    assert gone.status_code == 204
    after = client.get("/api/images", headers=bearer(revoked["token"]))
    assert after.status_code == 401 and after.json()["error"]["code"] == "token_revoked"
    late = client.get("/api/images", headers=bearer(expired["token"]))
    assert late.status_code == 401 and late.json()["error"]["code"] == "token_expired"
    again = client.delete(f"/api/auth/tokens/{revoked['id']}", headers=user.auth_headers)
    assert again.status_code == 404
    listed = client.get("/api/auth/tokens", headers=user.auth_headers).json()["items"]
    assert listed == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": ["admin"], "expires_in_days": 1},
        {"name": "x", "scopes": [], "expires_in_days": 1},
        {"name": "x", "scopes": ["read"], "expires_in_days": 0},
        {"name": "x", "scopes": ["read"], "expires_in_days": 100000},
        {"name": "", "scopes": ["read"], "expires_in_days": 1},
        {"scopes": ["read"], "expires_in_days": 1},
    ],
)
def test_bad_token_requests_get_a_clear_4xx(client: httpx.Client, user: SignedInUser, body: dict[str, Any]) -> None:
    answer = client.post("/api/auth/tokens", headers=user.auth_headers, json=body)

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_failed"


def test_a_taken_name_is_a_conflict(client: httpx.Client, user: SignedInUser) -> None:
    create_token(client, user, ["read"], name="same")
    again = client.post(
        "/api/auth/tokens", headers=user.auth_headers, json={"name": "same", "scopes": ["read"], "expires_in_days": 1}
    )
    assert again.status_code == 409


def test_no_token_appears_in_any_log(tmp_path: Path, test_database: str) -> None:
    # GIVEN a gateway (and its functions) logging everything they log, at DEBUG
    running = start_gateway(tmp_path, {**UNLIMITED, "BERTH_LOG_LEVEL": "DEBUG"})
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            user = sign_up_and_in(client)
            # WHEN a token is created, used, misused, revoked and used again
            created = create_token(client, user, ["deploy"], name="secretive")
            client.get("/api/images", headers=bearer(created["token"]))
            client.post("/api/images", headers=bearer(created["token"]), json={"name": "bad name!", "tag": "1"})
            client.get("/api/auth/tokens", headers=bearer(created["token"]))
            client.delete(f"/api/auth/tokens/{created['id']}", headers=user.auth_headers)
            client.get("/api/images", headers=bearer(created["token"]))
    finally:
        stop_process(running.process)
    logs = running.access_log()

    # THEN the logs tell what happened, and hold no token, nor any recognisable part of one
    assert "api token created" in logs and "api token revoked" in logs
    for secret in (created["token"], user.access_token, user.refresh_token):
        assert secret not in logs
        assert secret.rsplit(".", 1)[-1][:32] not in logs
    with psycopg.connect(test_database) as conn:
        conn.execute("DELETE FROM users WHERE id = %s", (user.id,))
