"""Who is calling: the ``CurrentUser`` dependency every protected route takes.

Behind a gateway (managed or local) the JWT authorizer has already verified the token and put its claims
in the event's ``requestContext.authorizer.jwt.claims``. Served on its own, a function verifies the
bearer token itself with the app's ``TokenVerifier`` (``app.state.token_verifier``). Either way a
signed-out session is refused: sign-out writes the session id to Redis, and this checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request

from shared.cache import KeySpace, get_redis
from shared.config import FunctionSettings, get_function_settings
from shared.errors import Unauthorized
from shared.observability import user_id_var
from shared.tokens import JwksKeySource, TokenVerifier, bearer_token


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str
    role: str
    plan: str
    session_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def revoked_session_key(keys: KeySpace, session_id: str) -> str:
    return keys.key("revoked-session", session_id)


async def revoke_session_tokens(settings: FunctionSettings, session_id: str) -> None:
    """Make every access token of ``session_id`` stop working now (until they would expire anyway)."""
    redis = get_redis(settings.redis_url)
    key = revoked_session_key(KeySpace(settings.redis_prefix), session_id)
    await redis.set(key, "1", ex=settings.access_token_ttl_seconds + 60)


async def is_session_revoked(settings: FunctionSettings, session_id: str) -> bool:
    redis = get_redis(settings.redis_url)
    return bool(await redis.exists(revoked_session_key(KeySpace(settings.redis_prefix), session_id)))


def _gateway_claims(request: Request) -> dict[str, Any] | None:
    event = request.scope.get("aws.event")
    if not event:
        return None
    jwt_context = ((event.get("requestContext") or {}).get("authorizer") or {}).get("jwt") or {}
    claims = jwt_context.get("claims")
    return dict(claims) if claims else None


@lru_cache
def _jwks_verifier(jwks_url: str, issuer: str, audience: str) -> TokenVerifier:
    async def fetch() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(jwks_url)
            response.raise_for_status()
            return dict(response.json())

    return TokenVerifier(JwksKeySource(fetch), issuer=issuer, audience=audience)


def default_token_verifier(settings: FunctionSettings) -> TokenVerifier:
    """Verifies tokens against the auth function's published JWKS (for functions served directly)."""
    return _jwks_verifier(settings.jwks_url, settings.jwt_issuer, settings.jwt_audience)


async def current_principal(request: Request) -> Principal:
    settings = get_function_settings()
    claims = _gateway_claims(request)
    if claims is None:
        verifier: TokenVerifier = getattr(request.app.state, "token_verifier", None) or default_token_verifier(settings)
        claims = await verifier.verify(bearer_token(request.headers.get("authorization")))
    try:
        principal = Principal(
            user_id=str(claims["sub"]),
            email=str(claims["email"]),
            role=str(claims["role"]),
            plan=str(claims["plan"]),
            session_id=str(claims["sid"]),
        )
    except KeyError as exc:
        raise Unauthorized("The access token lacks Berth's claims; sign in again.", code="invalid_token") from exc
    if await is_session_revoked(settings, principal.session_id):
        raise Unauthorized("This session has been signed out; sign in again.", code="session_revoked")
    user_id_var.set(principal.user_id)
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
