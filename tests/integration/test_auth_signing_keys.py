"""Signing keys against the real database: first key, rotation, pruning, encryption at rest, the CLI.

Rotation is publish-before-use: a new key is in the JWKS at once and signs only once it activates.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from anyio import to_thread
from psycopg.rows import dict_row

import shared.tokens
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
from shared.config import PROJECT_ROOT, FunctionSettings, get_function_settings
from shared.db import get_database
from shared.errors import Unauthorized
from shared.migrate import apply_migrations, drop_database
from shared.tokens import JwksKeySource, TokenVerifier, generate_rsa_key, issue_access_token, public_jwk
from tests.support.waiting import wait_until_async

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


def query(sql: str, *params: object) -> list[dict[str, Any]]:
    with psycopg.connect(get_function_settings().database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def with_delay(seconds: int, **changes: object) -> FunctionSettings:
    """The run's settings, with new keys activating ``seconds`` after a rotation."""
    return get_function_settings().model_copy(update={"key_activation_delay_seconds": seconds, **changes})


async def wait_until_active(kid: str, timeout: float = 30.0) -> None:
    """Until the database's clock has passed the key's activates_at."""
    await wait_until_async(
        lambda: query("SELECT 1 FROM signing_keys WHERE kid = %s AND activates_at <= clock_timestamp()", kid),
        timeout=timeout,
        interval=0.1,
        message=f"key {kid} did not activate",
    )


async def published_kids(api: httpx.AsyncClient) -> list[str]:
    return [key["kid"] for key in (await api.get("/api/auth/.well-known/jwks.json")).json()["keys"]]


async def test_a_new_key_is_published_at_once_and_signs_once_it_activates(
    api: httpx.AsyncClient, signed_in: dict[str, str]
) -> None:
    old_kid = kid_of(signed_in["access_token"])
    # A long key cache: it still must not keep signing with the old key past the new one's activation.
    settings = with_delay(2, key_cache_seconds=3600)

    new_kid = await rotate_signing_key(settings)

    assert new_kid != old_kid
    published = await published_kids(api)
    assert published[0] == new_kid and old_kid in published
    # Published, not signing yet: verifiers get to cache it before any token names it.
    fresh = await api.post("/api/auth/signin", json={"email": signed_in["email"], "password": PASSWORD})
    assert kid_of(fresh.json()["access_token"]) == old_kid
    assert (await current_signing_key(settings))[0] == old_kid
    assert (await api.get("/api/auth/me", headers=bearer(signed_in["access_token"]))).status_code == 200

    await wait_until_active(new_kid)

    assert (await current_signing_key(settings))[0] == new_kid  # no forget_cached_keys(): the cache knew
    signed_in_again = await api.post("/api/auth/signin", json={"email": signed_in["email"], "password": PASSWORD})
    assert kid_of(signed_in_again.json()["access_token"]) == new_kid
    refreshed = await api.post("/api/auth/refresh", json={"refresh_token": signed_in["refresh_token"]})
    assert kid_of(refreshed.json()["access_token"]) == new_kid
    # Tokens from before the rotation keep working; the old key stays published, superseded from the
    # moment the new one activated.
    for token in (signed_in["access_token"], fresh.json()["access_token"]):
        assert (await api.get("/api/auth/me", headers=bearer(token))).status_code == 200
    assert old_kid in await published_kids(api)
    rows = {row["kid"]: row for row in query("SELECT kid, activates_at, retired_at FROM signing_keys")}
    assert rows[new_kid]["retired_at"] is None
    assert rows[old_kid]["retired_at"] == rows[new_kid]["activates_at"]


async def test_an_immediate_rotation_signs_at_once(api: httpx.AsyncClient, signed_in: dict[str, str]) -> None:
    old_kid = kid_of(signed_in["access_token"])

    new_kid = await rotate_signing_key(get_function_settings(), immediately=True)

    fresh = await api.post("/api/auth/signin", json={"email": signed_in["email"], "password": PASSWORD})
    assert kid_of(fresh.json()["access_token"]) == new_kid
    assert (await api.get("/api/auth/me", headers=bearer(signed_in["access_token"]))).status_code == 200
    assert {old_kid, new_kid} <= set(await published_kids(api))


async def test_concurrent_rotations_leave_exactly_one_signing_key() -> None:
    settings = with_delay(1)
    kids = await asyncio.gather(rotate_signing_key(settings), rotate_signing_key(settings))

    newest = query("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
    assert len(newest) == 1 and newest[0]["kid"] in kids
    await wait_until_active(newest[0]["kid"])
    assert (await current_signing_key(settings))[0] == newest[0]["kid"]


async def test_a_pending_key_superseded_by_an_immediate_rotation_never_signs() -> None:
    settings = with_delay(1, key_cache_seconds=0)
    pending = await rotate_signing_key(settings)
    replacement = await rotate_signing_key(settings, immediately=True)

    assert (await current_signing_key(settings))[0] == replacement
    await wait_until_active(pending)
    assert (await current_signing_key(settings))[0] == replacement
    rows = {row["kid"]: row for row in query("SELECT kid, activates_at, retired_at FROM signing_keys")}
    assert rows[pending]["retired_at"] == rows[replacement]["activates_at"] < rows[pending]["activates_at"]


async def test_a_verifier_knows_a_key_before_it_signs_however_throttled_its_unknown_kid_refresh(
    api: httpx.AsyncClient, signed_in: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flake this guards against: a verifier whose cache lacks the signing key and whose re-read
    for unknown kids is busy (someone sent garbage kids) refused fresh tokens after a rotation."""
    settings = get_function_settings()
    # A verifier like the gateway's, whose unknown-kid refresh is throttled for the whole test.
    monkeypatch.setattr(shared.tokens, "UNKNOWN_KID_REFRESH_SECONDS", 3600.0)
    fetches = 0

    async def fetch() -> dict[str, Any]:
        nonlocal fetches
        fetches += 1
        return await published_jwks(settings, max_age=0)

    verifier = TokenVerifier(JwksKeySource(fetch), issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    new_kid = await rotate_signing_key(with_delay(1))
    await verifier.verify(signed_in["access_token"])  # the verifier's JWKS, read after the key's publication
    garbage = issue_access_token(
        generate_rsa_key(),
        "garbage-kid",
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=60,
        subject="nobody",
        email="nobody@example.com",
        role="user",
        plan="free",
        session_id="none",
    )
    with pytest.raises(Unauthorized):
        await verifier.verify(garbage)
    assert fetches == 1  # the unknown kid's re-read was throttled

    await wait_until_active(new_kid)
    forget_cached_keys()
    fresh = await api.post("/api/auth/signin", json={"email": signed_in["email"], "password": PASSWORD})
    token = fresh.json()["access_token"]

    assert kid_of(token) == new_kid
    assert (await verifier.verify(token))["email"] == signed_in["email"]
    assert fetches == 1  # known from the cached JWKS, no re-read needed


async def test_a_pruned_keys_tokens_are_refused(api: httpx.AsyncClient, signed_in: dict[str, str]) -> None:
    settings = get_function_settings()
    claims = jwt.decode(signed_in["access_token"], options={"verify_signature": False})
    # A key retired a minute ago: still published, as tokens it signed may still be live.
    old_key, old_kid = generate_rsa_key(), f"test-retired-{secrets.token_hex(4)}"
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO signing_keys (kid, private_key_encrypted, public_jwk, created_at, activates_at, retired_at) "
            "VALUES (%s, %s, %s, now() - interval '1 day', now() - interval '1 day', now() - interval '1 minute')",
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

        # Time passes: the key has been superseded longer than any token it signed can live.
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

        # A rotation with no key signing yet has nothing to wait for: its key signs at once.
        forget_cached_keys()
        first = await rotate_signing_key(settings)
        assert (await current_signing_key(settings))[0] == first
        async with get_database(url).transaction() as conn:
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


async def run_rotate_keys(*flags: str) -> subprocess.CompletedProcess[str]:
    return await to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "cli.main", "rotate-keys", *flags],
            env=dict(os.environ),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    )


async def test_rotate_keys_command_publishes_a_key_that_signs_later_or_now(api: httpx.AsyncClient) -> None:
    settings = get_function_settings()
    before = {row["kid"] for row in query("SELECT kid FROM signing_keys")}
    signing = (await current_signing_key(settings))[0]  # this process now holds the key in its cache

    delayed = await run_rotate_keys()

    assert delayed.returncode == 0, delayed.stderr
    newest = query("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
    assert len(newest) == 1 and newest[0]["kid"] not in before
    pending = str(newest[0]["kid"])
    assert pending in delayed.stdout
    assert f"in {settings.key_activation_delay_seconds} s" in delayed.stdout
    # Another instance rotated: this one's JWKS route shows the new key at once, and nobody signs with
    # it before it activates, whatever their cache.

    async def both_published() -> bool:
        published = set(await published_kids(api))
        return pending in published and signing in published

    await wait_until_async(
        both_published, timeout=JWKS_ROUTE_MAX_AGE_SECONDS, message="the JWKS route did not show both keys in time"
    )
    forget_cached_keys()
    assert (await current_signing_key(settings))[0] == signing

    immediate = await run_rotate_keys("--now")

    assert immediate.returncode == 0, immediate.stderr
    newest = query("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
    assert len(newest) == 1 and str(newest[0]["kid"]) in immediate.stdout
    assert "signs new tokens from now" in immediate.stdout
    forget_cached_keys()  # this process learns of the new key now rather than after its cache expires
    assert (await current_signing_key(settings))[0] == newest[0]["kid"]
    assert {signing, pending} <= set(await published_kids(api))  # superseded keys stay published
