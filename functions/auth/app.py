"""The auth function's routes: thin HTTP edges over ``functions.auth.service``.

Runs as a Lambda behind API Gateway (``handler``) or as a plain ASGI app (``berth serve auth``). It
verifies bearer tokens against its own key table when no gateway did it first.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Response

from functions.auth import service
from functions.auth.models import (
    RefreshRequest,
    SignInRequest,
    SignUpRequest,
    TokenResponse,
    UserCreated,
    UserProfile,
)
from functions.auth.signing_keys import JWKS_ROUTE_MAX_AGE_SECONDS, PublishedSigningKeys, published_jwks
from shared.config import FunctionSettings, get_function_settings
from shared.http_app import create_app, lambda_handler
from shared.identity import CurrentUser
from shared.tokens import TokenVerifier

# Verifiers may keep the documents briefly: one that meets a token with an unknown kid re-reads the JWKS.
DISCOVERY_CACHE_CONTROL = "public, max-age=60"

Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
router = APIRouter(prefix="/api/auth", tags=["auth"])


def _tokens(issued: service.IssuedTokens) -> TokenResponse:
    return TokenResponse(
        access_token=issued.access_token, refresh_token=issued.refresh_token, expires_in=issued.expires_in
    )


@router.post("/signup", status_code=201)
async def sign_up(body: SignUpRequest, settings: Settings) -> UserCreated:
    user = await service.sign_up(settings, body.email, body.password)
    return UserCreated(id=user.id, email=user.email)


@router.post("/signin")
async def sign_in(body: SignInRequest, settings: Settings) -> TokenResponse:
    return _tokens(await service.sign_in(settings, body.email, body.password))


@router.post("/refresh")
async def refresh(body: RefreshRequest, settings: Settings) -> TokenResponse:
    return _tokens(await service.refresh_session(settings, body.refresh_token))


@router.post("/signout", status_code=204)
async def sign_out(user: CurrentUser, settings: Settings) -> Response:
    await service.sign_out(settings, user)
    return Response(status_code=204)


@router.get("/me")
async def me(user: CurrentUser, settings: Settings) -> UserProfile:
    record = await service.describe_user(settings, user)
    return UserProfile(id=record.id, email=record.email, role=record.role, plan=record.plan)


@router.get("/.well-known/openid-configuration")
async def openid_configuration(response: Response, settings: Settings) -> dict[str, Any]:
    response.headers["Cache-Control"] = DISCOVERY_CACHE_CONTROL
    return service.openid_configuration(settings)


@router.get("/.well-known/jwks.json")
async def jwks(response: Response, settings: Settings) -> dict[str, Any]:
    response.headers["Cache-Control"] = DISCOVERY_CACHE_CONTROL
    return await published_jwks(settings, max_age=JWKS_ROUTE_MAX_AGE_SECONDS)


def build_app(settings: FunctionSettings) -> FastAPI:
    """The auth app, checking bearer tokens against its own key table (no gateway or JWKS fetch needed)."""
    auth_app = create_app("auth", [router])
    auth_app.state.token_verifier = TokenVerifier(
        PublishedSigningKeys(settings), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    return auth_app


app = build_app(get_function_settings())
handler = lambda_handler(app)
