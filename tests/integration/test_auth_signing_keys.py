"""Signing keys against the real database: first key, rotation, pruning, encryption at rest, the CLI."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import jwt
import psycopg
import pytest
from anyio import to_thread
from psycopg.rows import dict_row

from functions.auth.app import app
from functions.auth.signing_keys import (
    JWKS_ROUTE_MAX_AGE_SECONDS,
    current_signing_key,
    decrypt_private_key,
    encrypt_private_key,
    forget_cached_keys,
    prune_signing_keys,
    published_jwks,
    retired_key_lifetime_seconds,
    rotate_signing_key,
)
from shared.config import PROJECT_ROOT, get_function_settings
from shared.db import get_database
from shared.migrate import apply_migrations, drop_database
from shared.tokens import generate_rsa_key, issue_access_token, public_jwk

PASSWORD = "correct horse battery"


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://auth.local") as client:
        yield client


@pytest.fixture
async def signed_in(api: httpx.AsyncClient) -> AsyncIterator[dict[str, str]]:
    """A fresh account's sign-in answer plus its email; the account is deleted afterwards."""
    email = f"keys-{secrets.token_hex(6)}@example.com"
    assert (await api.post("/api/auth/signup", json={"email": email, "password": PASSWORD})).status_code == 201
    response = await api.post("/api/auth/signin", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200
    yield {**response.json(), "email": email}
    with psycopg.connect(get_function_settings().database_url) as conn:
        conn.execute("DELETE FROM users WHERE email = %s", (email,))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def query(sql: str, *params: object) -> list[dict[str, object]]:
    with psycopg.connect(get_function_settings().database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


async def test_rotation_logs_nobody_out_and_signs_new_tokens_with_the_new_key(
    api: httpx.AsyncClient, signed_in: dict[str, str]
) -> None:
    old_kid = kid_of(signed_in["access_token"])

    new_kid = await rotate_signing_key(get_function_settings())

    assert new_kid != old_kid
    still_valid = await api.get("/api/auth/me", headers=bearer(signed_in["access_token"]))
    assert still_valid.status_code == 200
    fresh = await api.post("/api/auth/signin", json={"email": signed_in["email"], "password": PASSWORD})
    assert kid_of(fresh.json()["access_token"]) == new_kid
    refreshed = await api.post("/api/auth/refresh", json={"refresh_token": signed_in["refresh_token"]})
    assert kid_of(refreshed.json()["access_token"]) == new_kid
    published = [key["kid"] for key in (await api.get("/api/auth/.well-known/jwks.json")).json()["keys"]]
    assert published[0] == new_kid and old_kid in published
    active = query("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
    assert active == [{"kid": new_kid}]


async def test_concurrent_rotations_leave_exactly_one_signing_key() -> None:
    settings = get_function_settings()
    kids = await asyncio.gather(rotate_signing_key(settings), rotate_signing_key(settings))

    active = query("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
    assert len(active) == 1 and active[0]["kid"] in kids
    assert (await current_signing_key(settings))[0] == active[0]["kid"]


async def test_a_pruned_keys_tokens_are_refused(api: httpx.AsyncClient, signed_in: dict[str, str]) -> None:
    settings = get_function_settings()
    claims = jwt.decode(signed_in["access_token"], options={"verify_signature": False})
    # A key retired a minute ago: still published, as tokens it signed may still be live.
    old_key, old_kid = generate_rsa_key(), f"test-retired-{secrets.token_hex(4)}"
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO signing_keys (kid, private_key_encrypted, public_jwk, created_at, retired_at) "
            "VALUES (%s, %s, %s, now() - interval '1 day', now() - interval '1 minute')",
            (old_kid, encrypt_private_key(settings, old_key), psycopg.types.json.Jsonb(public_jwk(old_key, old_kid))),
        )
    try:
        token = issue_access_token(
            old_key,
            old_kid,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=600,
            subject=claims["sub"],
            email=claims["email"],
            role="user",
            plan="free",
            session_id=claims["sid"],
        )
        forget_cached_keys()
        assert (await api.get("/api/auth/me", headers=bearer(token))).status_code == 200

        # Time passes: the key has been retired longer than any token it signed can live.
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(
                "UPDATE signing_keys SET retired_at = now() - make_interval(secs => %s) WHERE kid = %s",
                (retired_key_lifetime_seconds(settings) + 10, old_kid),
            )
        forget_cached_keys()
        assert old_kid not in {key["kid"] for key in (await published_jwks(settings))["keys"]}

        assert await prune_signing_keys(settings) == [old_kid]

        refused = await api.get("/api/auth/me", headers=bearer(token))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_token"
        assert query("SELECT kid FROM signing_keys WHERE kid = %s", old_kid) == []
        # Tokens of the current key are unaffected.
        assert (await api.get("/api/auth/me", headers=bearer(signed_in["access_token"]))).status_code == 200
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM signing_keys WHERE kid = %s", (old_kid,))


async def test_private_keys_are_encrypted_at_rest() -> None:
    settings = get_function_settings()
    kid, private_key = await current_signing_key(settings)
    rows = query("SELECT private_key_encrypted, public_jwk FROM signing_keys WHERE kid = %s", kid)
    stored = bytes(rows[0]["private_key_encrypted"])  # type: ignore[arg-type]
    assert b"PRIVATE KEY" not in stored
    assert decrypt_private_key(settings, stored).private_numbers() == private_key.private_numbers()
    assert "d" not in rows[0]["public_jwk"]  # type: ignore[operator]


async def test_the_first_key_is_created_once_when_instances_start_together() -> None:
    # An empty key table needs a database of its own: the run's database already has keys in use.
    base = get_function_settings()
    url = base.database_url + "_keys"
    await to_thread.run_sync(apply_migrations, url)
    settings = base.model_copy(update={"database_url": url, "key_cache_seconds": 0})
    try:
        first_keys = await asyncio.gather(*[current_signing_key(settings) for _ in range(8)])

        assert len({kid for kid, _ in first_keys}) == 1
        async with get_database(url).transaction() as conn:
            count = await (await conn.execute("SELECT count(*) AS n FROM signing_keys")).fetchone()
            assert count == {"n": 1}
            await conn.execute("DELETE FROM signing_keys")

        # A JWKS request before any sign-in creates and publishes the first key too.
        forget_cached_keys()
        document = await published_jwks(settings)
        assert len(document["keys"]) == 1
        assert document["keys"][0]["kid"] == (await current_signing_key(settings))[0]
    finally:
        await get_database(url).close()
        forget_cached_keys()
        await to_thread.run_sync(drop_database, url)


async def test_rotate_keys_command_adds_a_signing_key(api: httpx.AsyncClient) -> None:
    before = {row["kid"] for row in query("SELECT kid FROM signing_keys")}
    await current_signing_key(get_function_settings())  # this process now holds the old key in its cache

    result = await to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "shared.cli", "rotate-keys"],
            env=dict(os.environ),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    )

    assert result.returncode == 0, result.stderr
    active = query("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
    assert len(active) == 1 and active[0]["kid"] not in before
    assert str(active[0]["kid"]) in result.stdout
    # Another instance rotated: this one's JWKS route shows the new key at once, though it still signs
    # with its cached key, so a verifier that meets the new kid elsewhere finds it here.
    await asyncio.sleep(JWKS_ROUTE_MAX_AGE_SECONDS)
    published = {key["kid"] for key in (await api.get("/api/auth/.well-known/jwks.json")).json()["keys"]}
    assert active[0]["kid"] in published and before & published
    forget_cached_keys()  # this process learns of the new key now rather than after its cache expires
    assert (await current_signing_key(get_function_settings()))[0] == active[0]["kid"]
