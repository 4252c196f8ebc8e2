"""The auth function's logic: sign-up, sign-in, refresh-token rotation, sign-out and the OIDC documents.

Plain Python over the store, Redis and the signing keys; it knows nothing of HTTP or Lambda.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from functions.auth import passwords
from functions.auth.errors import (
    EmailTaken,
    invalid_credentials,
    invalid_refresh_token,
    refresh_token_reused,
)
from functions.auth.signin_throttle import clear_signin_attempts, count_signin_attempt
from functions.auth.signing_keys import current_signing_key
from functions.auth.store import RotationStatus, UserRecord, get_auth_store
from shared.config import FunctionSettings, get_function_settings
from shared.errors import Unauthorized
from shared.identity import Principal, revoke_session_tokens
from shared.observability import get_logger, log_event, user_id_var
from shared.tokens import ALGORITHM, CLAIM_NAMES, issue_access_token

logger = get_logger("auth", get_function_settings().log_level)


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


def new_refresh_token() -> tuple[str, bytes]:
    """An opaque refresh token and the hash stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> bytes:
    # The token is 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).digest()


async def _issue_access_token(settings: FunctionSettings, user: UserRecord, session_id: str) -> str:
    kid, private_key = await current_signing_key(settings)
    return issue_access_token(
        private_key,
        kid,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.access_token_ttl_seconds,
        subject=user.id,
        email=user.email,
        role=user.role,
        plan=user.plan,
        session_id=session_id,
    )


async def sign_up(settings: FunctionSettings, email: str, password: str) -> UserRecord:
    """Create an account for a normalised ``email``; ``EmailTaken`` if it exists already."""
    passwords.check_password_policy(password, email, settings.password_min_length)
    password_hash = await passwords.hash_password(password)
    user = await get_auth_store(settings).create_user(email, password_hash)
    if user is None:
        raise EmailTaken("An account with this email already exists; sign in instead.")
    user_id_var.set(user.id)  # the acting user on this request's later log lines
    log_event(logger, "user signed up")
    return user


async def sign_in(settings: FunctionSettings, email: str, password: str) -> IssuedTokens:
    """Check the credentials and open a session; one answer for a wrong password and an unknown email."""
    await count_signin_attempt(settings, email)
    store = get_auth_store(settings)
    user = await store.user_by_email(email)
    if user is None:
        await passwords.verify_against_dummy(password)
        log_event(logger, "sign-in refused", reason="unknown_email")
        raise invalid_credentials()
    check = await passwords.verify_password(user.password_hash, password)
    if not check.matches:
        log_event(logger, "sign-in refused", reason="wrong_password", account_id=user.id)
        raise invalid_credentials()
    await clear_signin_attempts(settings, email)
    if check.needs_rehash:
        # The hasher's parameters changed since this hash was made; upgrade it while we have the password.
        await store.replace_password_hash(user.id, user.password_hash, await passwords.hash_password(password))
    refresh_token, refresh_hash = new_refresh_token()
    session_id = await store.open_session(user.id, refresh_hash, settings.refresh_token_ttl_seconds)
    user_id_var.set(user.id)
    log_event(logger, "signed in", session_id=session_id)
    return IssuedTokens(
        await _issue_access_token(settings, user, session_id), refresh_token, settings.access_token_ttl_seconds
    )


async def refresh_session(settings: FunctionSettings, refresh_token: str) -> IssuedTokens:
    """Trade a refresh token for new tokens; reusing a used one revokes its whole session."""
    replacement, replacement_hash = new_refresh_token()
    rotation = await get_auth_store(settings).rotate_refresh_token(hash_refresh_token(refresh_token), replacement_hash)
    if rotation.status is RotationStatus.REUSED:
        assert rotation.session_id is not None
        await revoke_session_tokens(settings, rotation.session_id)
        logger.warning("refresh token reused; session revoked", extra={"session_id": rotation.session_id})
        raise refresh_token_reused()
    if rotation.status is RotationStatus.INVALID:
        raise invalid_refresh_token()
    assert rotation.user is not None and rotation.session_id is not None
    user_id_var.set(rotation.user.id)
    return IssuedTokens(
        await _issue_access_token(settings, rotation.user, rotation.session_id),
        replacement,
        settings.access_token_ttl_seconds,
    )


async def sign_out(settings: FunctionSettings, principal: Principal) -> None:
    """End the caller's session: its refresh tokens (PostgreSQL) and access tokens (Redis) stop working."""
    await get_auth_store(settings).revoke_session(principal.session_id, "signed_out")
    await revoke_session_tokens(settings, principal.session_id)
    log_event(logger, "signed out", session_id=principal.session_id)


async def describe_user(settings: FunctionSettings, principal: Principal) -> UserRecord:
    """The caller's account as the database has it now (role and plan may have changed since sign-in)."""
    user = await get_auth_store(settings).user_by_id(principal.user_id)
    if user is None:
        raise Unauthorized("The account behind this token no longer exists.", code="invalid_token")
    return user


def openid_configuration(settings: FunctionSettings) -> dict[str, Any]:
    """The OIDC discovery document a JWT authorizer (API Gateway's, or the local one) reads."""
    issuer = settings.jwt_issuer.rstrip("/")
    return {
        "issuer": settings.jwt_issuer,
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "token_endpoint": issuer + "/signin",
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "token_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["iss", "aud", "exp", "iat", "nbf", "jti", *CLAIM_NAMES, "token_use"],
    }
