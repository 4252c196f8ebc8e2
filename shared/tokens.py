"""Access tokens: RS256 JWTs with a ``kid``, issued by the auth function and verified everywhere else.

Verification trusts only RS256 and only keys from a ``KeySource`` (the JWKS): a token with ``alg: none``,
an HMAC algorithm (the RS/HS confusion attack), an unknown ``kid``, a bad signature, a wrong issuer or
audience, or an expired ``exp`` is refused with a 401 whose code says which.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.errors import Unauthorized

ALGORITHM = "RS256"
CLOCK_SKEW_SECONDS = 5
# A token whose kid is unknown makes the verifier re-read the keys at most this often.
UNKNOWN_KID_REFRESH_SECONDS = 5.0
CLAIM_NAMES = ("sub", "email", "role", "plan", "sid")


def generate_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    """The public half of ``private_key`` as a JWK, as published in the JWKS."""
    jwk = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
    return dict(jwk)


def issue_access_token(
    private_key: rsa.RSAPrivateKey,
    kid: str,
    *,
    issuer: str,
    audience: str,
    ttl_seconds: int,
    subject: str,
    email: str,
    role: str,
    plan: str,
    session_id: str,
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
        "email": email,
        "role": role,
        "plan": plan,
        "sid": session_id,
        "token_use": "access",
    }
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid})


# Personal access tokens are access tokens too (the same authorizers verify them), with these extra claims:
# ``tid`` (the token's row, checked on every use) and ``scope`` (space-separated: read, deploy).
TOKEN_ID_CLAIM = "tid"  # noqa: S105 - a claim name
SCOPE_CLAIM = "scope"


def issue_personal_access_token(
    private_key: rsa.RSAPrivateKey,
    kid: str,
    *,
    issuer: str,
    audience: str,
    expires_at: int,
    subject: str,
    email: str,
    plan: str,
    token_id: str,
    scopes: list[str],
) -> str:
    """A long-lived access token for scripts: a JWT with ``tid`` and ``scope`` and no admin role.

    A bare JWT (no prefix), because API Gateway's JWT authorizer must parse it as one."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": expires_at,
        "jti": uuid.uuid4().hex,
        "email": email,
        # A token never carries admin rights, whatever the user's role.
        "role": "user",
        "plan": plan,
        "sid": f"pat:{token_id}",
        TOKEN_ID_CLAIM: token_id,
        SCOPE_CLAIM: " ".join(scopes),
        "token_use": "access",
    }
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid})


class KeySource(Protocol):
    async def public_keys(self, *, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """The published public keys by kid; ``refresh`` asks for a fresh read instead of the cache."""
        ...


class JwksKeySource:
    """A cached JWKS, fetched by ``fetch`` (an HTTP GET, or an invocation of the auth function)."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Any]]], ttl_seconds: float = 300.0) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def public_keys(self, *, refresh: bool = False) -> dict[str, dict[str, Any]]:
        fresh = time.monotonic() - self._fetched_at < self._ttl
        if self._keys and fresh and not refresh:
            return self._keys
        async with self._lock:
            if refresh and time.monotonic() - self._fetched_at < UNKNOWN_KID_REFRESH_SECONDS:
                return self._keys
            document = await self._fetch()
            self._keys = {str(k["kid"]): k for k in document.get("keys", []) if "kid" in k}
            self._fetched_at = time.monotonic()
            return self._keys


class TokenVerifier:
    """Checks an access token's signature, algorithm, issuer, audience and lifetime; returns its claims."""

    def __init__(self, keys: KeySource, *, issuer: str, audience: str) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._parsed: dict[str, Any] = {}

    def _public_key(self, kid: str, jwk: dict[str, Any]) -> Any:
        cache_key = f"{kid}:{jwk.get('n')}"
        key = self._parsed.get(cache_key)
        if key is None:
            key = self._parsed[cache_key] = RSAAlgorithm.from_jwk(jwk)
        return key

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is malformed; sign in again.", code="invalid_token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("The access token uses an algorithm Berth does not accept.", code="invalid_token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("The access token names no signing key.", code="invalid_token")
        keys = await self._keys.public_keys()
        if kid not in keys:
            keys = await self._keys.public_keys(refresh=True)
        if kid not in keys:
            raise Unauthorized("The access token was signed by an unknown key; sign in again.", code="invalid_token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public_key(kid, keys[kid]),
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized(
                "The access token has expired; refresh it or sign in again.", code="token_expired"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is not valid; sign in again.", code="invalid_token") from exc
        if claims.get("token_use") != "access":
            raise Unauthorized("This is not an access token.", code="invalid_token")
        return claims


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or a 401 saying what is missing."""
    if not authorization:
        raise Unauthorized(
            "This route needs an access token: send 'Authorization: Bearer <token>'.", code="missing_token"
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.", code="invalid_token")
    return token
