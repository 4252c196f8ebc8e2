"""The auth function's routes: thin HTTP edges over ``functions.auth.service``.

Runs as a Lambda behind API Gateway (``handler``) or as a plain ASGI app (``berth serve auth``). It
verifies bearer tokens against its own key table when no gateway did it first.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Query, Response

from functions.auth import accounts, service
from functions.auth.account_store import AccountRecord
from functions.auth.deps import Settings
from functions.auth.models import (
    AccountDeleteRequest,
    AccountDeletion,
    AdminUser,
    AdminUserPage,
    EmailChangePending,
    EmailChangeRequest,
    EmailConfirmRequest,
    PasswordChanged,
    PasswordChangeRequest,
    RefreshRequest,
    SignInRequest,
    SignUpRequest,
    TokenCreated,
    TokenCreateRequest,
    TokenInfo,
    TokenPage,
    TokenResponse,
    UserCreated,
    UserProfile,
)
from functions.auth.signing_keys import JWKS_ROUTE_MAX_AGE_SECONDS, PublishedSigningKeys, published_jwks
from shared.config import FunctionSettings, get_function_settings
from shared.errors import ConfirmationMismatch, NotFound
from shared.http_app import create_app, lambda_handler
from shared.identity import AdminUser as Admin
from shared.identity import CurrentUser, DeletingUser, SessionUser
from shared.pagination import decode_cursor, encode_cursor, parse_id
from shared.tokens import TokenVerifier

# Verifiers may keep the documents briefly: one that meets a token with an unknown kid re-reads the JWKS.
DISCOVERY_CACHE_CONTROL = "public, max-age=60"

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


@router.post("/tokens", status_code=201)
async def create_token(body: TokenCreateRequest, user: SessionUser, settings: Settings) -> TokenCreated:
    created = await accounts.create_token(settings, user, body.name, list(body.scopes), body.expires_in_days)
    record = created.record
    return TokenCreated(
        id=record.id, name=record.name, scopes=list(record.scopes), expires_at=record.expires_at, token=created.token
    )


@router.get("/tokens")
async def list_tokens(user: SessionUser, settings: Settings) -> TokenPage:
    records = await accounts.list_tokens(settings, user)
    return TokenPage(
        items=[
            TokenInfo(
                id=r.id,
                name=r.name,
                scopes=list(r.scopes),
                created_at=r.created_at,
                expires_at=r.expires_at,
                last_used_at=r.last_used_at,
                last_used_ip=r.last_used_ip,
            )
            for r in records
        ]
    )


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: str, user: SessionUser, settings: Settings) -> Response:
    await accounts.revoke_token(settings, user, token_id)
    return Response(status_code=204)


@router.post("/password")
async def change_password(body: PasswordChangeRequest, user: SessionUser, settings: Settings) -> PasswordChanged:
    ended = await accounts.change_password(settings, user, body.current_password, body.new_password)
    return PasswordChanged(sessions_ended=ended)


@router.post("/email", status_code=202)
async def change_email(body: EmailChangeRequest, user: SessionUser, settings: Settings) -> EmailChangePending:
    expires_at = await accounts.request_email_change(settings, user, body.new_email, body.password)
    return EmailChangePending(new_email=body.new_email, expires_at=expires_at)


@router.post("/email/confirm")
async def confirm_email(body: EmailConfirmRequest, settings: Settings) -> UserProfile:
    account = await accounts.confirm_email_change(settings, body.token)
    return UserProfile(id=account.id, email=account.email, role=account.role, plan=account.plan)


@router.delete("/me", status_code=202)
async def delete_me(body: AccountDeleteRequest, user: DeletingUser, settings: Settings) -> AccountDeletion:
    if body.confirm.strip().lower() != user.email:
        raise ConfirmationMismatch('To delete the account, send {"confirm": "<its email>"}.')
    deletion = await accounts.delete_account(settings, user.user_id)
    return AccountDeletion(id=deletion.user_id, status=deletion.status, remaining=deletion.remaining)  # type: ignore[arg-type]


@router.get("/.well-known/openid-configuration")
async def openid_configuration(response: Response, settings: Settings) -> dict[str, Any]:
    response.headers["Cache-Control"] = DISCOVERY_CACHE_CONTROL
    return service.openid_configuration(settings)


@router.get("/.well-known/jwks.json")
async def jwks(response: Response, settings: Settings) -> dict[str, Any]:
    response.headers["Cache-Control"] = DISCOVERY_CACHE_CONTROL
    return await published_jwks(settings, max_age=JWKS_ROUTE_MAX_AGE_SECONDS)


admin = APIRouter(prefix="/api/admin", tags=["admin"])


def _admin_user(account: AccountRecord) -> AdminUser:
    return AdminUser(
        id=account.id,
        email=account.email,
        role=account.role,
        plan=account.plan,
        status=account.status,
        created_at=account.created_at,
    )


@admin.get("/users")
async def list_users(
    _: Admin,
    settings: Settings,
    limit: int = Query(default=50, ge=1, le=100),
    cursor: str | None = Query(default=None, max_length=64),
) -> AdminUserPage:
    after = decode_cursor(cursor) if cursor else None
    rows = await accounts.account_store(settings).page(limit + 1, after)
    page = rows[:limit]
    next_cursor = encode_cursor({"created_at": page[-1].created_at, "id": page[-1].id}) if len(rows) > limit else None
    return AdminUserPage(items=[_admin_user(row) for row in page], next_cursor=next_cursor)


@admin.post("/users/{user_id}/disable")
async def disable_user(user_id: str, _: Admin, settings: Settings) -> AdminUser:
    return _admin_user(await accounts.set_account_status(settings, user_id, "disabled"))


@admin.post("/users/{user_id}/enable")
async def enable_user(user_id: str, _: Admin, settings: Settings) -> AdminUser:
    return _admin_user(await accounts.set_account_status(settings, user_id, "active"))


@admin.delete("/users/{user_id}", status_code=202)
async def delete_user(user_id: str, _: Admin, settings: Settings) -> AccountDeletion:
    account = await accounts.account_store(settings).account(_checked_id(user_id))
    if account is None:
        raise NotFound(f"No user {user_id}.")
    deletion = await accounts.delete_account(settings, account.id)
    return AccountDeletion(id=deletion.user_id, status=deletion.status, remaining=deletion.remaining)  # type: ignore[arg-type]


def _checked_id(value: str) -> str:
    return parse_id(value)


def build_app(settings: FunctionSettings) -> FastAPI:
    """The auth app, checking bearer tokens against its own key table (no gateway or JWKS fetch needed)."""
    auth_app = create_app("auth", [router, admin])
    auth_app.state.token_verifier = TokenVerifier(
        PublishedSigningKeys(settings), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    return auth_app


app = build_app(get_function_settings())
handler = lambda_handler(app)
