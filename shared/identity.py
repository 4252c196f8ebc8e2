"""Who is calling: the ``CurrentUser`` dependency every protected route takes.

Behind a gateway (managed or local) the JWT authorizer has already verified the token and put its claims
in the event's ``requestContext.authorizer.jwt.claims``. Served on its own, a function verifies the
bearer token itself with the app's ``TokenVerifier`` (``app.state.token_verifier``). Either way a
signed-out session is refused: sign-out writes the session id to Redis, and this checks it.

A personal access token (claims ``tid`` and ``scope``) is checked against its row instead
(``shared.api_token_store``): revoked, expired or of a disabled account -> 401 at once, on every path. Its
scopes gate the method: ``read`` for GET/HEAD, ``deploy`` for anything else (403 ``insufficient_scope``).
Routes a token must never reach (its own management, the account, admin) take ``SessionUser``;
admin routes take ``AdminUser``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request

from shared.api_token_store import ApiTokenStore
from shared.cache import KeySpace, get_redis
from shared.config import FunctionSettings, get_function_settings
from shared.db import get_database
from shared.errors import Forbidden, Unauthorized
from shared.observability import user_id_var
from shared.tokens import SCOPE_CLAIM, TOKEN_ID_CLAIM, JwksKeySource, TokenVerifier, bearer_token

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A session (signed in with a password) may do anything its role allows; a token only what its scopes say.
SESSION_SCOPES = ("read", "deploy")


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str
    role: str
    plan: str
    session_id: str
    token_id: str | None = None
    scopes: tuple[str, ...] = SESSION_SCOPES

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_personal_token(self) -> bool:
        return self.token_id is not None


def revoked_session_key(keys: KeySpace, session_id: str) -> str:
    return keys.key("revoked-session", session_id)


# Why a session was revoked, kept as the Redis value: a deleted account's own session may still ask to
# delete it again (the answer is the same), nothing else.
ACCOUNT_DELETED = "account_deleted"


async def revoke_session_tokens(settings: FunctionSettings, session_id: str, reason: str = "1") -> None:
    """Make every access token of ``session_id`` stop working now (until they would expire anyway)."""
    redis = get_redis(settings.redis_url)
    key = revoked_session_key(KeySpace(settings.redis_prefix), session_id)
    await redis.set(key, reason, ex=settings.access_token_ttl_seconds + 60)


async def session_revocation(settings: FunctionSettings, session_id: str) -> str | None:
    """Why ``session_id`` was revoked, or None while it is live."""
    redis = get_redis(settings.redis_url)
    value = await redis.get(revoked_session_key(KeySpace(settings.redis_prefix), session_id))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def is_session_revoked(settings: FunctionSettings, session_id: str) -> bool:
    return await session_revocation(settings, session_id) is not None


def client_ip(request: Request) -> str:
    """The caller's address: the gateway's ``sourceIp`` when invoked through one, else the socket's peer."""
    event = request.scope.get("aws.event")
    if event:
        source = ((event.get("requestContext") or {}).get("http") or {}).get("sourceIp")
        if source:
            return str(source)
    return request.client.host if request.client else "-"


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


async def _token_principal(settings: FunctionSettings, request: Request, claims: dict[str, Any]) -> Principal:
    token_id = str(claims[TOKEN_ID_CLAIM])
    store = ApiTokenStore(get_database(settings.database_url, settings.database_pool_max))
    use = await store.check_use(token_id, str(claims["sub"]), client_ip(request))
    if not use.usable:
        messages = {
            "revoked": ("This token has been revoked.", "token_revoked"),
            "expired": ("This token has expired; create a new one.", "token_expired"),
            "account_inactive": ("The account behind this token is disabled.", "account_disabled"),
        }
        message, code = messages.get(use.reason, ("This token is not known.", "invalid_token"))
        raise Unauthorized(message, code=code)
    return Principal(
        user_id=str(claims["sub"]),
        email=str(claims["email"]),
        role="user",
        plan=str(claims["plan"]),
        session_id=str(claims.get("sid") or f"pat:{token_id}"),
        token_id=token_id,
        scopes=use.scopes,
    )


async def authenticate(request: Request) -> Principal:
    """The verified caller of ``request`` (cached on the request), or ``Unauthorized``; no scope check."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    settings = get_function_settings()
    claims = _gateway_claims(request)
    if claims is None:
        verifier: TokenVerifier = getattr(request.app.state, "token_verifier", None) or default_token_verifier(settings)
        claims = await verifier.verify(bearer_token(request.headers.get("authorization")))
    try:
        if claims.get(TOKEN_ID_CLAIM):
            if not isinstance(claims.get(SCOPE_CLAIM), str):
                raise KeyError(SCOPE_CLAIM)
            principal = await _token_principal(settings, request, claims)
        else:
            principal = Principal(
                user_id=str(claims["sub"]),
                email=str(claims["email"]),
                role=str(claims["role"]),
                plan=str(claims["plan"]),
                session_id=str(claims["sid"]),
            )
    except KeyError as exc:
        raise Unauthorized("The access token lacks Berth's claims; sign in again.", code="invalid_token") from exc
    if not principal.is_personal_token:
        revoked = await session_revocation(settings, principal.session_id)
        if revoked is not None and not (revoked == ACCOUNT_DELETED and getattr(request.state, "deleting", False)):
            raise Unauthorized("This session has been signed out; sign in again.", code="session_revoked")
    user_id_var.set(principal.user_id)
    request.state.principal = principal
    return principal


async def current_principal(request: Request) -> Principal:
    """The caller, allowed this request's method by its scopes (a session has them all)."""
    principal = await authenticate(request)
    needed = "read" if request.method.upper() in READ_METHODS else "deploy"
    if needed not in principal.scopes:
        raise Forbidden(
            f"This token's scopes ({', '.join(principal.scopes)}) do not include '{needed}'.",
            code="insufficient_scope",
        )
    return principal


async def session_principal(request: Request) -> Principal:
    """The caller, signed in with a password: personal access tokens may not manage tokens or the account."""
    principal = await authenticate(request)
    if principal.is_personal_token:
        raise Forbidden(
            "Personal access tokens cannot manage tokens or the account; sign in with your password.",
            code="session_required",
        )
    return principal


async def deleting_principal(request: Request) -> Principal:
    """``session_principal`` that also accepts the session of an account deleted already, so deleting it
    again answers as the first time did."""
    request.state.deleting = True
    return await session_principal(request)


async def admin_principal(request: Request) -> Principal:
    """The caller, signed in with a password and holding the admin role."""
    principal = await session_principal(request)
    if not principal.is_admin:
        raise Forbidden("This route is for administrators.", code="admin_only")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
SessionUser = Annotated[Principal, Depends(session_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
DeletingUser = Annotated[Principal, Depends(deleting_principal)]
