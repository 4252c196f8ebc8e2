"""The dashboard's sessions (a backend-for-frontend): the auth function's logic, with the refresh token
kept by the browser in an HttpOnly cookie instead of by page scripts.

Signing in, refreshing and signing out are ``functions.auth.service``'s own operations, so the rules
(sign-in throttling, one-time refresh tokens, reuse revoking the session) are the API's. The user in
each answer comes from the access token just issued, which this module verifies like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from functions.auth import service
from shared.config import FunctionSettings
from shared.errors import Unauthorized
from shared.identity import Principal
from shared.observability import get_logger, log_event
from shared.tokens import TokenVerifier

logger = get_logger("ui")


@dataclass(frozen=True)
class SessionUser:
    id: str
    email: str
    role: str
    plan: str


@dataclass(frozen=True)
class UiSession:
    access_token: str
    refresh_token: str
    expires_in: int
    user: SessionUser


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        return Principal(
            user_id=str(claims["sub"]),
            email=str(claims["email"]),
            role=str(claims["role"]),
            plan=str(claims["plan"]),
            session_id=str(claims["sid"]),
        )
    except KeyError as exc:
        raise Unauthorized("The access token lacks Berth's claims; sign in again.", code="invalid_token") from exc


async def _session(verifier: TokenVerifier, issued: service.IssuedTokens) -> UiSession:
    principal = principal_from_claims(await verifier.verify(issued.access_token))
    user = SessionUser(principal.user_id, principal.email, principal.role, principal.plan)
    return UiSession(issued.access_token, issued.refresh_token, issued.expires_in, user)


async def open_session(settings: FunctionSettings, verifier: TokenVerifier, email: str, password: str) -> UiSession:
    """Sign in with the credentials (throttled per account like ``POST /api/auth/signin``)."""
    return await _session(verifier, await service.sign_in(settings, email, password))


async def resume_session(settings: FunctionSettings, verifier: TokenVerifier, refresh_token: str) -> UiSession:
    """Trade the cookie's refresh token for new tokens; a spent or unknown one is ``Unauthorized``."""
    return await _session(verifier, await service.refresh_session(settings, refresh_token))


async def close_session(
    settings: FunctionSettings, verifier: TokenVerifier, *, access_token: str | None, refresh_token: str | None
) -> int:
    """Sign out the session of the access token and that of the refresh token (usually the same one);
    the number of sessions signed out. Tokens that no longer work are skipped: signing out always ends
    with no usable session in this browser."""
    signed_out: set[str] = set()
    if access_token:
        try:
            principal = principal_from_claims(await verifier.verify(access_token))
        except Unauthorized:
            principal = None
        if principal is not None:
            await service.sign_out(settings, principal)
            signed_out.add(principal.session_id)
    if refresh_token:
        # Redeeming the token names its session; ending that session then voids the tokens just issued.
        try:
            session = await service.refresh_session(settings, refresh_token)
            principal = principal_from_claims(await verifier.verify(session.access_token))
        except Unauthorized:
            principal = None
        if principal is not None and principal.session_id not in signed_out:
            await service.sign_out(settings, principal)
            signed_out.add(principal.session_id)
    log_event(logger, "ui sign-out", sessions=len(signed_out))
    return len(signed_out)
