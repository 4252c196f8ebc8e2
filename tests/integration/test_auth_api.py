"""The auth function in-process (ASGI), against the real PostgreSQL and Redis of the test run."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import redis
from argon2 import PasswordHasher

from functions.auth.app import app
from functions.auth.signin_throttle import attempts_key
from functions.auth.store import get_auth_store
from shared.config import FunctionSettings, get_function_settings

PASSWORD = "correct horse battery"


@dataclass
class Account:
    id: str
    email: str
    password: str
    access_token: str = ""
    refresh_token: str = ""

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Accounts:
    """Makes accounts with unique emails, and removes them (and their sign-in counters) afterwards."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api
        self.emails: list[str] = []

    def new_email(self, label: str = "user") -> str:
        email = f"{label}-{secrets.token_hex(6)}@example.com"
        self.emails.append(email)
        return email

    async def sign_up(self, email: str | None = None, password: str = PASSWORD) -> Account:
        email = email or self.new_email()
        response = await self.api.post("/api/auth/signup", json={"email": email, "password": password})
        assert response.status_code == 201, response.text
        return Account(response.json()["id"], email, password)

    async def sign_in(self, account: Account) -> Account:
        response = await self.api.post("/api/auth/signin", json={"email": account.email, "password": account.password})
        assert response.status_code == 200, response.text
        account.access_token = response.json()["access_token"]
        account.refresh_token = response.json()["refresh_token"]
        return account

    async def signed_in(self) -> Account:
        return await self.sign_in(await self.sign_up())

    def remove_all(self) -> None:
        settings = get_function_settings()
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM users WHERE email = ANY(%s)", ([e.lower() for e in self.emails],))
        client = redis.Redis.from_url(settings.redis_url)
        for email in self.emails:
            client.delete(attempts_key(settings, email.lower()))
        client.close()


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://auth.local") as client:
        yield client


@pytest.fixture
def accounts(api: httpx.AsyncClient) -> Iterator[Accounts]:
    made = Accounts(api)
    yield made
    made.remove_all()


@pytest.fixture
def auth_settings() -> Iterator[Any]:
    """Lets a test run the app with other settings (e.g. a short throttling window)."""

    def use(**changes: Any) -> FunctionSettings:
        changed = get_function_settings().model_copy(update=changes)
        app.dependency_overrides[get_function_settings] = lambda: changed
        return changed

    yield use
    app.dependency_overrides.pop(get_function_settings, None)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def db_row(query: str, *params: Any) -> dict[str, Any] | None:
    with psycopg.connect(get_function_settings().database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(query, params).fetchone()


# --- sign-up ---------------------------------------------------------------------------------------


async def test_signup_creates_an_account_with_a_lower_case_email_and_an_argon2id_hash(
    api: httpx.AsyncClient, accounts: Accounts
) -> None:
    email = accounts.new_email("Mixed.Case").replace("example.com", "EXAMPLE.com")
    response = await api.post("/api/auth/signup", json={"email": email, "password": PASSWORD})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email"}
    assert body["email"] == email.lower()
    row = db_row("SELECT email, password_hash, role, plan FROM users WHERE id = %s", body["id"])
    assert row is not None
    assert row["email"] == email.lower() and (row["role"], row["plan"]) == ("user", "free")
    assert row["password_hash"].startswith("$argon2id$") and PASSWORD not in row["password_hash"]


async def test_signup_with_a_taken_email_in_any_case_is_a_conflict(api: httpx.AsyncClient, accounts: Accounts) -> None:
    account = await accounts.sign_up()
    response = await api.post(
        "/api/auth/signup", json={"email": account.email.upper(), "password": "another fine passphrase"}
    )
    assert response.status_code == 409
    assert error_code(response) == "email_taken"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "two@@example.com", "password": PASSWORD}, "email"),
        ({"email": "", "password": PASSWORD}, "email"),
        ({"password": PASSWORD}, "email"),
        ({"email": "ada@example.com"}, "password"),
        ({"email": "ada@example.com", "password": 12345678901234}, "password"),
        ({"email": 42, "password": PASSWORD}, "email"),
        ({"email": "ada@example.com", "password": None}, "password"),
        ({"email": "ada@example.com", "password": PASSWORD, "role": "admin"}, "role"),
    ],
)
async def test_signup_with_bad_fields_is_a_422_naming_the_field(
    api: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    response = await api.post("/api/auth/signup", json=payload)
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_failed"
    assert field in [detail["field"] for detail in response.json()["error"]["details"]]


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "at least 10"),
        ("zzzzzzzzzzzzzzzz", "repeated"),
        ("Password1234", "common"),
        ("y" * 129 + "a", "at most 128"),
    ],
)
async def test_signup_with_a_weak_password_says_why(
    api: httpx.AsyncClient, accounts: Accounts, password: str, reason: str
) -> None:
    response = await api.post("/api/auth/signup", json={"email": accounts.new_email(), "password": password})
    assert response.status_code == 422
    assert error_code(response) == "weak_password"
    assert reason in response.json()["error"]["message"]


async def test_signup_refuses_a_password_that_is_mostly_the_email(api: httpx.AsyncClient, accounts: Accounts) -> None:
    email = accounts.new_email("grace.hopper")
    response = await api.post("/api/auth/signup", json={"email": email, "password": email.split("@")[0] + "!"})
    assert response.status_code == 422
    assert "mostly the email" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b'{"email": "ada@example.com", "password": ', 400, "invalid_json"),
        (b"not json at all", 400, "invalid_json"),
        (b'["ada@example.com", "correct horse battery"]', 422, "validation_failed"),
        (b"", 422, "validation_failed"),
    ],
)
async def test_signup_with_a_malformed_body_is_a_clear_4xx(
    api: httpx.AsyncClient, content: bytes, status: int, code: str
) -> None:
    response = await api.post("/api/auth/signup", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert error_code(response) == code


# --- sign-in ---------------------------------------------------------------------------------------


async def test_signin_returns_a_bearer_token_pair(api: httpx.AsyncClient, accounts: Accounts) -> None:
    account = await accounts.sign_up()
    response = await api.post("/api/auth/signin", json={"email": account.email.upper(), "password": PASSWORD})

    assert response.status_code == 200
    body = response.json()
    settings = get_function_settings()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    assert body["refresh_token"] and "." not in body["refresh_token"]  # opaque, not a JWT
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == account.id and claims["email"] == account.email
    assert (claims["role"], claims["plan"], claims["iss"]) == ("user", "free", settings.jwt_issuer)
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "RS256"
    stored = db_row(
        "SELECT count(*) AS n FROM refresh_tokens WHERE token_hash = %s",
        hashlib.sha256(body["refresh_token"].encode()).digest(),
    )
    assert stored == {"n": 1}


async def test_wrong_password_and_unknown_email_get_the_same_answer(api: httpx.AsyncClient, accounts: Accounts) -> None:
    account = await accounts.sign_up()
    wrong = await api.post("/api/auth/signin", json={"email": account.email, "password": "not the password"})
    unknown = await api.post("/api/auth/signin", json={"email": accounts.new_email("nobody"), "password": PASSWORD})

    assert wrong.status_code == unknown.status_code == 401
    assert error_code(wrong) == error_code(unknown) == "invalid_credentials"
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_unknown_email_takes_about_as_long_as_a_wrong_password(
    api: httpx.AsyncClient, accounts: Accounts
) -> None:
    account = await accounts.sign_up()

    async def timed(email: str) -> float:
        started = time.perf_counter()
        response = await api.post("/api/auth/signin", json={"email": email, "password": "not the password"})
        assert response.status_code == 401
        return time.perf_counter() - started

    await timed(accounts.new_email("warm-up"))  # the first unknown email also builds the dummy hash
    wrong = statistics.median([await timed(account.email) for _ in range(3)])
    unknown = statistics.median([await timed(accounts.new_email("nobody")) for _ in range(3)])
    # Both verify an argon2 hash; without the dummy, an unknown email would answer many times faster.
    assert unknown > wrong * 0.5, (unknown, wrong)


async def test_repeated_failures_lock_the_account_even_for_the_right_password(
    api: httpx.AsyncClient, accounts: Accounts
) -> None:
    account = await accounts.sign_up()
    limit = get_function_settings().signin_max_failures
    for _ in range(limit):
        failed = await api.post("/api/auth/signin", json={"email": account.email, "password": "wrong guess!"})
        assert failed.status_code == 401

    locked = await api.post("/api/auth/signin", json={"email": account.email, "password": PASSWORD})

    assert locked.status_code == 429
    assert error_code(locked) == "too_many_attempts"
    assert 1 <= int(locked.headers["retry-after"]) <= get_function_settings().signin_failure_window_seconds


async def test_unknown_emails_are_throttled_like_known_ones(api: httpx.AsyncClient, accounts: Accounts) -> None:
    email = accounts.new_email("nobody")
    statuses = [
        (await api.post("/api/auth/signin", json={"email": email, "password": "wrong guess!"})).status_code
        for _ in range(get_function_settings().signin_max_failures + 1)
    ]
    assert statuses[:-1] == [401] * get_function_settings().signin_max_failures
    assert statuses[-1] == 429


async def test_the_lock_lifts_when_the_window_passes(
    api: httpx.AsyncClient, accounts: Accounts, auth_settings: Any
) -> None:
    auth_settings(signin_max_failures=2, signin_failure_window_seconds=1)
    account = await accounts.sign_up()
    for _ in range(2):
        await api.post("/api/auth/signin", json={"email": account.email, "password": "wrong guess!"})
    assert (await api.post("/api/auth/signin", json={"email": account.email, "password": PASSWORD})).status_code == 429

    # Part of the check: past the 1 s window (trying to sign in while waiting would be attempts of its own)
    await asyncio.sleep(2.1)

    assert (await api.post("/api/auth/signin", json={"email": account.email, "password": PASSWORD})).status_code == 200


async def test_a_successful_signin_resets_the_failure_count(
    api: httpx.AsyncClient, accounts: Accounts, auth_settings: Any
) -> None:
    auth_settings(signin_max_failures=3)
    account = await accounts.sign_up()
    for _ in range(2):
        await api.post("/api/auth/signin", json={"email": account.email, "password": "wrong guess!"})
    await accounts.sign_in(account)
    for _ in range(3):
        failed = await api.post("/api/auth/signin", json={"email": account.email, "password": "wrong guess!"})
        assert failed.status_code == 401  # a fresh allowance of three
    assert (await api.post("/api/auth/signin", json={"email": account.email, "password": PASSWORD})).status_code == 429


async def test_signin_upgrades_a_hash_made_with_older_parameters(api: httpx.AsyncClient, accounts: Accounts) -> None:
    email = accounts.new_email()
    old_hash = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    user = await get_auth_store(get_function_settings()).create_user(email, old_hash)
    assert user is not None

    await accounts.sign_in(Account(user.id, email, PASSWORD))

    row = db_row("SELECT password_hash FROM users WHERE id = %s", user.id)
    assert row is not None and row["password_hash"] != old_hash
    assert not PasswordHasher().check_needs_rehash(row["password_hash"])
    await accounts.sign_in(Account(user.id, email, PASSWORD))  # the new hash verifies too


async def test_signin_with_missing_fields_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/auth/signin", json={"email": "ada@example.com"})
    assert response.status_code == 422
    assert error_code(response) == "validation_failed"


# --- me, refresh, sign-out -------------------------------------------------------------------------


async def test_me_reads_the_account_from_the_database(api: httpx.AsyncClient, accounts: Accounts) -> None:
    account = await accounts.signed_in()
    response = await api.get("/api/auth/me", headers=account.auth_headers)
    assert response.status_code == 200
    assert response.json() == {"id": account.id, "email": account.email, "role": "user", "plan": "free"}

    with psycopg.connect(get_function_settings().database_url) as conn:
        conn.execute("UPDATE users SET plan = 'pro' WHERE id = %s", (account.id,))
    assert (await api.get("/api/auth/me", headers=account.auth_headers)).json()["plan"] == "pro"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_token"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
    ],
)
async def test_me_without_a_valid_token_is_a_401(api: httpx.AsyncClient, headers: dict[str, str], code: str) -> None:
    response = await api.get("/api/auth/me", headers=headers)
    assert response.status_code == 401
    assert error_code(response) == code
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_refresh_rotates_the_refresh_token(api: httpx.AsyncClient, accounts: Accounts) -> None:
    account = await accounts.signed_in()

    first = await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["refresh_token"] != account.refresh_token
    old_claims = jwt.decode(account.access_token, options={"verify_signature": False})
    new_claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert new_claims["sid"] == old_claims["sid"] and new_claims["jti"] != old_claims["jti"]
    me = await api.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200

    second = await api.post("/api/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert second.status_code == 200


async def test_reusing_a_refresh_token_revokes_the_whole_session(api: httpx.AsyncClient, accounts: Accounts) -> None:
    account = await accounts.signed_in()
    rotated = (await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})).json()

    reused = await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})

    assert reused.status_code == 401
    assert error_code(reused) == "refresh_token_reused"
    for access_token in (account.access_token, rotated["access_token"]):
        me = await api.get("/api/auth/me", headers={"Authorization": f"Bearer {access_token}"})
        assert me.status_code == 401
        assert error_code(me) == "session_revoked"
    newest = await api.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert newest.status_code == 401
    assert error_code(newest) == "invalid_refresh_token"
    # Other sessions of the same user are untouched.
    other = await accounts.sign_in(Account(account.id, account.email, account.password))
    assert (await api.get("/api/auth/me", headers=other.auth_headers)).status_code == 200


async def test_concurrent_refreshes_with_one_token_succeed_at_most_once(
    api: httpx.AsyncClient, accounts: Accounts
) -> None:
    account = await accounts.signed_in()

    responses = await asyncio.gather(
        *[api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token}) for _ in range(6)]
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [401] * 5, statuses
    refused = {error_code(response) for response in responses if response.status_code == 401}
    assert refused <= {"refresh_token_reused", "invalid_refresh_token"}
    session_tokens = db_row(
        "SELECT count(*) FILTER (WHERE used_at IS NULL) AS unused, count(*) AS total FROM refresh_tokens "
        "WHERE session_id = (SELECT session_id FROM refresh_tokens WHERE token_hash = %s)",
        hashlib.sha256(account.refresh_token.encode()).digest(),
    )
    assert session_tokens == {"unused": 1, "total": 2}


@pytest.mark.parametrize("token", ["", "x" * 4097])
async def test_refresh_with_a_malformed_token_is_a_422(api: httpx.AsyncClient, token: str) -> None:
    response = await api.post("/api/auth/refresh", json={"refresh_token": token})
    assert response.status_code == 422


async def test_unknown_and_expired_refresh_tokens_are_invalid(api: httpx.AsyncClient, accounts: Accounts) -> None:
    unknown = await api.post("/api/auth/refresh", json={"refresh_token": secrets.token_urlsafe(32)})
    assert unknown.status_code == 401 and error_code(unknown) == "invalid_refresh_token"

    account = await accounts.signed_in()
    with psycopg.connect(get_function_settings().database_url) as conn:
        conn.execute(
            "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = %s",
            (hashlib.sha256(account.refresh_token.encode()).digest(),),
        )
    for _ in range(2):  # an expired token stays merely invalid: it was never used
        expired = await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
        assert expired.status_code == 401 and error_code(expired) == "invalid_refresh_token"


async def test_signout_ends_the_session_for_access_and_refresh_tokens(
    api: httpx.AsyncClient, accounts: Accounts
) -> None:
    account = await accounts.signed_in()

    signed_out = await api.post("/api/auth/signout", headers=account.auth_headers)

    assert signed_out.status_code == 204 and signed_out.content == b""
    me = await api.get("/api/auth/me", headers=account.auth_headers)
    assert me.status_code == 401 and error_code(me) == "session_revoked"
    refreshed = await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert refreshed.status_code == 401 and error_code(refreshed) == "invalid_refresh_token"
    again = await api.post("/api/auth/signout", headers=account.auth_headers)
    assert again.status_code == 401
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    row = db_row("SELECT revoked_reason FROM auth_sessions WHERE id = %s", claims["sid"])
    assert row == {"revoked_reason": "signed_out"}


async def test_signout_needs_a_token(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/auth/signout")
    assert response.status_code == 401 and error_code(response) == "missing_token"


# --- discovery -------------------------------------------------------------------------------------


async def test_openid_configuration_is_public_and_cacheable(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/auth/.well-known/openid-configuration")
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    document = response.json()
    issuer = get_function_settings().jwt_issuer
    assert document["issuer"] == issuer
    assert document["jwks_uri"] == issuer + "/.well-known/jwks.json"
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_jwks_publishes_public_keys_only(api: httpx.AsyncClient, accounts: Accounts) -> None:
    account = await accounts.signed_in()
    response = await api.get("/api/auth/.well-known/jwks.json")
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    keys = response.json()["keys"]
    assert keys and all(key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig" for key in keys)
    assert all(not {"d", "p", "q", "dp", "dq", "qi"} & set(key) for key in keys)
    assert jwt.get_unverified_header(account.access_token)["kid"] in {key["kid"] for key in keys}


async def test_logs_carry_the_user_but_never_passwords_or_tokens(
    api: httpx.AsyncClient, accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    auth_logger = logging.getLogger("auth")
    with caplog.at_level(logging.INFO, logger="auth"):
        account = await accounts.signed_in()
        refreshed = (await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})).json()
        await api.post("/api/auth/signin", json={"email": account.email, "password": "a wrong password"})
        await api.post("/api/auth/signout", headers={"Authorization": f"Bearer {refreshed['access_token']}"})

    formatter = auth_logger.handlers[0].formatter
    assert formatter is not None
    lines = [formatter.format(record) for record in caplog.records if record.name == "auth"]
    messages = [json.loads(line)["message"] for line in lines]
    assert {"user signed up", "signed in", "sign-in refused", "signed out"} <= set(messages)
    secrets_used = [
        account.password,
        "a wrong password",
        account.access_token,
        account.refresh_token,
        refreshed["access_token"],
        refreshed["refresh_token"],
    ]
    assert not [line for line in lines for secret in secrets_used if secret in line]
    signed_in = next(json.loads(line) for line in lines if json.loads(line)["message"] == "signed in")
    assert signed_in["user_id"] == account.id
