"""Account management: personal access tokens, password and email changes, deletion, and admin actions.

Plain Python over the stores, Redis and the job queues; it knows nothing of HTTP or Lambda. Nothing here
logs a secret: tokens, passwords and confirmation tokens appear in no log line (tests grep for them).

Email confirmation: outside production the "mail" goes to the ``dev_outbox`` table (read it with
``berth dev-mail`` or SQL), never to a log; production has no mail sender yet, so changing an email there
answers 503 rather than pretending to send.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from functions.auth import passwords
from functions.auth.account_store import AccountRecord, AccountStore
from functions.auth.errors import EmailTaken
from functions.auth.signing_keys import current_signing_key
from shared.api_token_store import ApiTokenRecord, ApiTokenStore, hash_api_token
from shared.config import Environment, FunctionSettings, get_function_settings
from shared.db import get_database
from shared.errors import Conflict, NotFound, ServiceUnavailable, Unauthorized
from shared.identity import ACCOUNT_DELETED, Principal, revoke_session_tokens
from shared.jobs import Job, JobKind, delete_image_job, get_host_job_queue, get_job_queue
from shared.observability import get_logger, log_event
from shared.tokens import issue_personal_access_token

logger = get_logger("auth", get_function_settings().log_level)


def account_store(settings: FunctionSettings) -> AccountStore:
    return AccountStore(get_database(settings.database_url, settings.database_pool_max))


def token_store(settings: FunctionSettings) -> ApiTokenStore:
    return ApiTokenStore(get_database(settings.database_url, settings.database_pool_max))


# --- personal access tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedToken:
    record: ApiTokenRecord
    token: str


async def create_token(
    settings: FunctionSettings, principal: Principal, name: str, scopes: list[str], expires_in_days: int
) -> CreatedToken:
    """A new token of the caller's, shown once: only its hash is stored."""
    token_id = str(uuid.uuid4())
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=expires_in_days)
    kid, private_key = await current_signing_key(settings)
    token = issue_personal_access_token(
        private_key,
        kid,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        expires_at=int(expires_at.timestamp()),
        subject=principal.user_id,
        email=principal.email,
        plan=principal.plan,
        token_id=token_id,
        scopes=sorted(set(scopes)),
    )
    record = await token_store(settings).create(
        token_id, principal.user_id, name, sorted(set(scopes)), hash_api_token(token), kid, expires_at
    )
    if record is None:
        raise Conflict(f"You already have a token named {name!r}; pick another name or revoke it first.")
    log_event(logger, "api token created", api_token_id=token_id, scopes=list(record.scopes))
    return CreatedToken(record, token)


async def list_tokens(settings: FunctionSettings, principal: Principal) -> list[ApiTokenRecord]:
    return await token_store(settings).list_live(principal.user_id)


async def revoke_token(settings: FunctionSettings, principal: Principal, token_id: str) -> None:
    """Revoke at once: the next request with it gets 401 (every use reads its row)."""
    try:
        uuid.UUID(token_id)
    except ValueError:
        raise NotFound(f"No token {token_id}.") from None
    if not await token_store(settings).revoke(principal.user_id, token_id):
        raise NotFound(f"No token {token_id}.")
    log_event(logger, "api token revoked", api_token_id=token_id)


# --- password and email ------------------------------------------------------------------------------


async def _check_password(store: AccountStore, principal: Principal, password: str) -> None:
    stored = await store.password_hash(principal.user_id)
    if stored is None or not (await passwords.verify_password(stored, password)).matches:
        raise Unauthorized("The current password is wrong.", code="invalid_credentials")


async def _end_sessions(settings: FunctionSettings, user_id: str, reason: str, keep: str | None = None) -> int:
    """Revoke the user's sessions but ``keep``: refresh tokens (PostgreSQL) and access tokens (Redis)."""
    ended = await account_store(settings).revoke_sessions(user_id, reason, keep)
    for session_id in ended:
        await revoke_session_tokens(settings, session_id, reason)
    return len(ended)


async def change_password(settings: FunctionSettings, principal: Principal, current: str, new: str) -> int:
    """Set a new password; every other session of the user ends (this one stays). How many ended."""
    store = account_store(settings)
    await _check_password(store, principal, current)
    passwords.check_password_policy(new, principal.email, settings.password_min_length)
    await store.set_password_hash(principal.user_id, await passwords.hash_password(new))
    ended = await _end_sessions(settings, principal.user_id, "password_changed", keep=principal.session_id)
    log_event(logger, "password changed", sessions_ended=ended)
    return ended


def _confirmation_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def request_email_change(
    settings: FunctionSettings, principal: Principal, new_email: str, password: str
) -> datetime:
    """Mail a confirmation token to ``new_email``; the address changes when it is presented."""
    store = account_store(settings)
    await _check_password(store, principal, password)
    if new_email == principal.email:
        raise Conflict("That is already your email.")
    if await store.email_taken(new_email):
        raise EmailTaken("An account with this email already exists.")
    if settings.environment is Environment.PRODUCTION:
        raise ServiceUnavailable("Email changes need a mail sender, which this deployment does not have yet.")
    token = secrets.token_urlsafe(32)
    body = (
        f"Someone asked to move the Berth account {principal.email} to this address.\n"
        f'To confirm, run `berth account confirm-email {token}` or POST {{"token": "{token}"}} to '
        f"{settings.jwt_issuer.rstrip('/')}/email/confirm.\n"
    )
    expires_at = await store.start_email_change(
        principal.user_id,
        new_email,
        _confirmation_hash(token),
        settings.email_change_ttl_seconds,
        ("Confirm your new Berth email", body),
    )
    log_event(logger, "email change requested")
    return expires_at


async def confirm_email_change(settings: FunctionSettings, token: str) -> AccountRecord:
    result = await account_store(settings).confirm_email_change(_confirmation_hash(token))
    if result is None:
        raise NotFound("The confirmation token is unknown, used or expired; ask for a new one.")
    if result == "taken":
        raise EmailTaken("An account with this email was created meanwhile.")
    assert isinstance(result, AccountRecord)
    # Sessions carry the email in their access tokens: end them, so every client signs in with the new one.
    await _end_sessions(settings, result.id, "email_changed")
    log_event(logger, "email changed", account_id=result.id)
    return result


# --- deletion --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deletion:
    user_id: str
    status: str  # "deleting" while hosts still remove containers, then "deleted"
    remaining: dict[str, int]


async def delete_account(settings: FunctionSettings, user_id: str) -> Deletion:
    """Delete the account and everything it owns; idempotent, and a retry finishes what is left.

    Order: the account stops working (sessions, tokens) -> services (no rollout replaces what is deleted
    next) and alert rules and webhooks go -> listeners and their certificates go (lb-runtime unbinds) -> each
    container is deleted through its host worker's queue (which also deregisters it) -> image records whose
    containers are gone are removed with an ``image.delete`` job (storage and the hosts' copies; hosts'
    orphan collection removes any copy in use a moment longer). Usage and billing records stay.
    """
    store = account_store(settings)
    first = await store.mark_deleted(user_id)
    await _end_sessions(settings, user_id, ACCOUNT_DELETED)
    await token_store(settings).revoke_all(user_id)
    services = await store.delete_configuration(user_id)
    listeners = await store.delete_listeners(user_id)
    containers = await store.delete_containers(user_id)
    for container in containers:
        if container["host_id"] is not None:
            queue = get_host_job_queue(settings, str(container["host_id"]))
            await queue.send(Job(JobKind.RECONCILE_CONTAINER, {"container_id": str(container["id"])}))
    images = await store.delete_unused_images(user_id)
    if images:
        queue = get_job_queue(settings)
        for image in images:
            await queue.send(delete_image_job(image))
    remaining = await store.remaining(user_id)
    status = "deleted" if not any(remaining.values()) else "deleting"
    log_event(
        logger,
        "account deleted" if first else "account deletion retried",
        account_id=user_id,
        services=services,
        listeners=listeners,
        containers=len(containers),
        images=len(images),
        status=status,
    )
    return Deletion(user_id, status, remaining)


# --- admin -----------------------------------------------------------------------------------------


async def set_account_status(settings: FunctionSettings, user_id: str, status: str) -> AccountRecord:
    """Disable (every session and token stops at once) or re-enable an account."""
    try:
        uuid.UUID(user_id)
    except ValueError:
        raise NotFound(f"No user {user_id}.") from None
    account = await account_store(settings).set_status(user_id, status)
    if account is None:
        raise NotFound(f"No user {user_id}.")
    if status == "disabled":
        await _end_sessions(settings, user_id, "account_disabled")
    log_event(logger, f"account {status}", account_id=user_id)
    return account


async def grant_admin(settings: FunctionSettings, email: str, role: str = "admin") -> AccountRecord:
    """Give (or take back) the admin role; only the server-side `berth admin grant` calls this. The user's
    next sign-in carries it."""
    account = await account_store(settings).set_role(email.strip().lower(), role)
    if account is None:
        raise NotFound(f"No account with email {email}.")
    log_event(logger, "role changed", account_id=account.id, role=role)
    return account
