"""The gateway's JWT authorizer: API Gateway HTTP API's ``jwt`` authorizer, run locally.

A protected operation needs ``Authorization: Bearer <token>``; the token is verified with
``shared.tokens.TokenVerifier`` against the JWKS, which the gateway gets by invoking the function
behind the issuer's ``/.well-known/jwks.json`` route directly (no HTTP round trip through itself),
caches for five minutes and re-reads when a token names a key it has not seen (a rotation).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway.spec import JwtAuthorizerSpec, SpecError
from shared.errors import BerthError, ServiceUnavailable, Unauthorized
from shared.tokens import CLOCK_SKEW_SECONDS, JwksKeySource, TokenVerifier, bearer_token

JWKS_CACHE_SECONDS = 300.0
# A verified token is trusted again without re-verifying for this long (never past its expiry). Shorter
# than the JWKS cache, so it never keeps a withdrawn key working longer than that cache would anyway.
VERIFIED_TOKEN_CACHE_SECONDS = 60.0
VERIFIED_TOKEN_CACHE_SIZE = 10_000


class AuthorizerUnavailable(ServiceUnavailable):
    code = "authorizer_unavailable"


def jwks_path_of(issuer: str) -> str:
    """Where an issuer publishes its keys, as OIDC discovery would find them: ``<issuer>/.well-known/...``."""
    return urlsplit(issuer).path.rstrip("/") + "/.well-known/jwks.json"


def www_authenticate(error: Unauthorized) -> str:
    """The RFC 6750 challenge for a refused token (no error code when there was no token at all)."""
    if error.code == "missing_token":
        return 'Bearer realm="berth"'
    return f'Bearer realm="berth", error="invalid_token", error_description="{error.code}"'


class JwtAuthorizer:
    """Verifies the bearer token of a request; answers its claims or raises ``Unauthorized``."""

    def __init__(
        self,
        spec: JwtAuthorizerSpec,
        fetch_jwks: Callable[[], Awaitable[dict[str, Any]]],
        *,
        cache_seconds: float = JWKS_CACHE_SECONDS,
    ) -> None:
        if len(spec.audiences) != 1:
            raise SpecError(
                f"authorizer {spec.name}: the local gateway supports exactly one audience, got {list(spec.audiences)}"
            )
        self.spec = spec
        self._verifier = TokenVerifier(
            JwksKeySource(fetch_jwks, cache_seconds), issuer=spec.issuer, audience=spec.audiences[0]
        )
        # token -> (claims, trusted until): RS256 verification is most of the authorizer's cost.
        self._verified: dict[str, tuple[dict[str, Any], float]] = {}

    async def authorize(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """The verified claims of the request's token."""
        try:
            token = bearer_token(headers.get(self.spec.identity_header))
            now = time.time()
            cached = self._verified.get(token)
            if cached is not None:
                if now < cached[1]:
                    return cached[0]
                del self._verified[token]
            claims = await self._verifier.verify(token)
            self._remember(token, claims, now)
            return claims
        except Unauthorized as exc:
            exc.headers = {"WWW-Authenticate": www_authenticate(exc)}
            raise
        except BerthError as exc:
            raise AuthorizerUnavailable(
                "The gateway cannot read the signing keys right now; try again shortly."
            ) from exc

    def _remember(self, token: str, claims: dict[str, Any], now: float) -> None:
        expires = claims.get("exp")
        if not isinstance(expires, int | float):
            return
        if len(self._verified) >= VERIFIED_TOKEN_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = (claims, min(float(expires) + CLOCK_SKEW_SECONDS, now + VERIFIED_TOKEN_CACHE_SECONDS))
