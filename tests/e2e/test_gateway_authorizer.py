"""The gateway's JWT authorizer, through the real gateway and the real auth function.

Every kind of bad token a client or an attacker may send is refused with a 401 in the error shape,
before any function runs; a good one reaches the function with its claims.

Tests that rotate keys do so in a database and behind a gateway of their own: the session's gateway
caches the JWKS for five minutes, and a key activated after its last read (a test's activation delay is
seconds, not the 330 s default) could be unknown to it while a test that sent an unknown kid keeps its
re-read throttled. So the session database's keys never rotate, and the tokens tests mint with
``current_signing_key`` always name a key the session's gateway has.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from shared.config import FunctionSettings, get_function_settings
from shared.tokens import UNKNOWN_KID_REFRESH_SECONDS, generate_rsa_key, issue_access_token
from tests.conftest import TEST_DATABASE_URL, UNLIMITED, RunningGateway, start_gateway, stop_process
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.fixtures.gateway.support import claims_of, hs256_token_keyed_with, unsigned_token, with_claims
from tests.support.waiting import wait_until, wait_until_async


async def _signing_key() -> tuple[str, RSAPrivateKey]:
    from functions.auth.signing_keys import current_signing_key

    return await current_signing_key(get_function_settings())


def _mint(
    gateway: RunningGateway,
    user: SignedInUser,
    private_key: RSAPrivateKey,
    kid: str,
    *,
    ttl_seconds: int = 300,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    claims = claims_of(user.access_token)
    return issue_access_token(
        private_key,
        kid,
        issuer=issuer or gateway.env["BERTH_JWT_ISSUER"],
        audience=audience or get_function_settings().jwt_audience,
        ttl_seconds=ttl_seconds,
        subject=user.id,
        email=user.email,
        role="user",
        plan="free",
        session_id=claims["sid"],
    )


def _assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"] == response.headers["apigw-requestid"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_valid_token_reaches_the_function(client: httpx.Client, signed_in_user: SignedInUser) -> None:
    response = client.get("/api/auth/me", headers=signed_in_user.auth_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": signed_in_user.id, "email": signed_in_user.email, "role": "user", "plan": "free"}
    assert response.headers["x-request-id"] == response.headers["apigw-requestid"]
    assert int(response.headers["ratelimit-remaining"]) >= 0


def test_a_protected_route_without_a_token_is_refused(client: httpx.Client) -> None:
    response = client.get("/api/auth/me")
    _assert_refused(response, "missing_token")
    assert response.headers["www-authenticate"] == 'Bearer realm="berth"'
    _assert_refused(client.get("/api/auth/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}), "invalid_token")


async def test_an_expired_token_is_refused(
    client: httpx.Client, gateway: RunningGateway, signed_in_user: SignedInUser
) -> None:
    kid, key = await _signing_key()
    expired = _mint(gateway, signed_in_user, key, kid, ttl_seconds=-60)
    _assert_refused(client.get("/api/auth/me", headers={"Authorization": f"Bearer {expired}"}), "token_expired")


async def test_forged_and_tampered_tokens_are_refused(
    client: httpx.Client, gateway: RunningGateway, signed_in_user: SignedInUser
) -> None:
    kid, key = await _signing_key()
    claims = claims_of(signed_in_user.access_token)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = {
        "tampered payload": with_claims(signed_in_user.access_token, role="admin"),
        "signed by another key under a published kid": _mint(gateway, signed_in_user, generate_rsa_key(), kid),
        "signed by an unknown key": _mint(gateway, signed_in_user, generate_rsa_key(), "unknown-kid"),
        "alg none": unsigned_token(claims, kid),
        "HS256 keyed with the public key": hs256_token_keyed_with(public_pem, claims, kid),
        "wrong issuer": _mint(gateway, signed_in_user, key, kid, issuer="https://evil.example/api/auth"),
        "wrong audience": _mint(gateway, signed_in_user, key, kid, audience="someone-else"),
        "not a JWT": "not-a-jwt",
    }
    for name, token in forged.items():
        response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        _assert_refused(response, "invalid_token")


def test_a_protected_route_needs_a_token_and_a_public_one_does_not(
    client: httpx.Client, signed_in_user: SignedInUser
) -> None:
    _assert_refused(client.get("/api/images"), "missing_token")
    assert client.get("/api/images", headers=signed_in_user.auth_headers).status_code == 200
    # The dashboard's routes are public: no token, or even a bad one, is checked there.
    for headers in ({}, signed_in_user.auth_headers, {"Authorization": "Bearer not-a-token"}):
        response = client.get("/ui/", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/html")
    refresh = client.post("/ui/session/refresh", headers={"Authorization": "Bearer not-a-token"})
    assert refresh.status_code == 403, refresh.text
    assert refresh.json()["error"]["code"] == "ui_header_required"


@pytest.fixture
async def rotation_settings() -> AsyncIterator[FunctionSettings]:
    """Settings on a database of the test's own, whose new keys activate two seconds after a rotation."""
    from anyio import to_thread

    from functions.auth.signing_keys import forget_cached_keys
    from shared.db import get_database
    from shared.migrate import apply_migrations, drop_database

    url = f"{TEST_DATABASE_URL}_rotation_{secrets.token_hex(3)}"
    await to_thread.run_sync(apply_migrations, url)
    yield get_function_settings().model_copy(
        update={"database_url": url, "key_activation_delay_seconds": 2, "key_cache_seconds": 0}
    )
    await get_database(url).close()
    forget_cached_keys()
    await to_thread.run_sync(drop_database, url)


@pytest.fixture
def rotating_gateway(tmp_path: Path, rotation_settings: FunctionSettings) -> Iterator[RunningGateway]:
    """A gateway on that database whose auth function re-reads its keys at every request."""
    env = {"BERTH_KEY_CACHE_SECONDS": "0", "BERTH_DATABASE_URL": rotation_settings.database_url}
    running = start_gateway(tmp_path, UNLIMITED | env)
    yield running
    stop_process(running.process)


async def _wait_until_signing(settings: FunctionSettings, kid: str, timeout: float = 30.0) -> RSAPrivateKey:
    from functions.auth.signing_keys import current_signing_key

    async def signing_key() -> RSAPrivateKey | None:
        signing_kid, key = await current_signing_key(settings)
        return key if signing_kid == kid else None

    return await wait_until_async(signing_key, timeout=timeout, message=f"key {kid} did not start signing")


async def test_a_key_rotation_is_picked_up_without_a_restart(
    rotating_gateway: RunningGateway, rotation_settings: FunctionSettings
) -> None:
    from functions.auth.signing_keys import JWKS_ROUTE_MAX_AGE_SECONDS, current_signing_key, rotate_signing_key

    with httpx.Client(base_url=rotating_gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)
        assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 200  # JWKS now cached
        old_kid = (await current_signing_key(rotation_settings))[0]
        new_kid = await rotate_signing_key(rotation_settings)
        # Published at once (the JWKS route answers from a copy up to a second old), signing only once
        # it activates.
        assert (await current_signing_key(rotation_settings))[0] == old_kid
        wait_until(
            lambda: new_kid in {key["kid"] for key in client.get("/api/auth/.well-known/jwks.json").json()["keys"]},
            timeout=JWKS_ROUTE_MAX_AGE_SECONDS,
            message=f"{new_kid} was not published within the JWKS route's cache age",
        )
        key = await _wait_until_signing(rotation_settings, new_kid)
        token = _mint(rotating_gateway, user, key, new_kid)
        # This gateway read the JWKS before the key was published and caches it for five minutes, longer
        # than this test's activation delay: it re-reads when a token names an unknown kid (at most every
        # few seconds).
        wait_until(
            lambda: client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200,
            timeout=15,
            interval=0.5,
            message="the gateway never accepted a token signed by the new key",
        )
        # tokens signed by the superseded key keep working until they expire
        assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 200


async def test_a_freshly_activated_key_is_accepted_while_the_unknown_kid_refresh_is_throttled(
    rotating_gateway: RunningGateway, rotation_settings: FunctionSettings
) -> None:
    from functions.auth.signing_keys import current_signing_key, rotate_signing_key

    with httpx.Client(base_url=rotating_gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)  # signing up and in needs no token: the gateway has read no JWKS yet
        old_kid = (await current_signing_key(rotation_settings))[0]
        settings = rotation_settings.model_copy(update={"key_activation_delay_seconds": 1})
        new_kid = await rotate_signing_key(settings)  # published now, signs in a second
        garbage = _mint(rotating_gateway, user, generate_rsa_key(), "garbage-kid")
        # The gateway reads the JWKS (the new key is in it), does not know the garbage kid, and will not
        # re-read for an unknown kid for UNKNOWN_KID_REFRESH_SECONDS from now.
        throttled_from = time.monotonic()
        _assert_refused(client.get("/api/auth/me", headers={"Authorization": f"Bearer {garbage}"}), "invalid_token")
        assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 200

        key = await _wait_until_signing(settings, new_kid)
        signed_in = client.post("/api/auth/signin", json={"email": user.email, "password": user.password})
        fresh = signed_in.json()["access_token"]
        _assert_refused(client.get("/api/auth/me", headers={"Authorization": f"Bearer {garbage}"}), "invalid_token")
        assert claims_of(fresh)["sub"] == user.id and new_kid != old_kid

        for token in (fresh, _mint(rotating_gateway, user, key, new_kid), user.access_token):
            response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
        # All within the throttle: the new key was accepted from the JWKS read before it activated, not
        # from a re-read for its kid (which would have had to wait).
        assert time.monotonic() - throttled_from < UNKNOWN_KID_REFRESH_SECONDS


def test_unknown_routes_and_methods_answer_404_json(client: httpx.Client) -> None:
    for method, path in [
        ("GET", "/api/nothing-here"),
        ("PUT", "/api/auth/me"),
        ("GET", "/"),
        ("PUT", f"/api/auth/signin/{secrets.token_hex(2)}"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        error = response.json()["error"]
        assert error["code"] == "not_found"
        assert error["request_id"] == response.headers["x-request-id"]
