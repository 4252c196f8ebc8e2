"""The gateway's JWT authorizer, through the real gateway and the real auth function.

Every kind of bad token a client or an attacker may send is refused with a 401 in the error shape,
before any function runs; a good one reaches the function with its claims.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from shared.config import get_function_settings
from shared.tokens import generate_rsa_key, issue_access_token
from tests.conftest import UNLIMITED, RunningGateway, start_gateway, stop_process
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.fixtures.gateway.support import claims_of, hs256_token_keyed_with, unsigned_token, with_claims


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


def test_a_not_built_route_needs_a_token_then_answers_501(client: httpx.Client, signed_in_user: SignedInUser) -> None:
    _assert_refused(client.get("/api/images"), "missing_token")
    response = client.post("/api/containers/abc/start", headers=signed_in_user.auth_headers)
    assert response.status_code == 501, response.text
    assert response.json()["error"]["code"] == "not_implemented"


@pytest.fixture
def rotating_gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    """A gateway whose auth function re-reads its keys at every request, so a rotation shows at once."""
    running = start_gateway(tmp_path, UNLIMITED | {"BERTH_KEY_CACHE_SECONDS": "0"})
    yield running
    stop_process(running.process)


async def test_a_key_rotation_is_picked_up_without_a_restart(rotating_gateway: RunningGateway) -> None:
    from functions.auth.signing_keys import current_signing_key, forget_cached_keys, rotate_signing_key

    with httpx.Client(base_url=rotating_gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)
        assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 200  # JWKS now cached
        new_kid = await rotate_signing_key(get_function_settings())
        forget_cached_keys()
        kid, key = await current_signing_key(get_function_settings())
        assert kid == new_kid
        token = _mint(rotating_gateway, user, key, kid)
        # The gateway re-reads the JWKS when a token names an unknown kid (at most every few seconds).
        deadline = time.monotonic() + 15
        status = 0
        while time.monotonic() < deadline:
            status = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200
        # tokens signed by the retired key keep working until they expire
        assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 200


def test_unknown_routes_and_methods_answer_404_json(client: httpx.Client) -> None:
    for method, path in [
        ("GET", "/api/nothing-here"),
        ("DELETE", "/api/auth/me"),
        ("GET", "/"),
        ("PUT", f"/api/auth/signin/{secrets.token_hex(2)}"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        error = response.json()["error"]
        assert error["code"] == "not_found"
        assert error["request_id"] == response.headers["x-request-id"]
