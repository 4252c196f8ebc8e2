"""The auth function's error codes: shared error classes with the codes its clients rely on."""

from __future__ import annotations

from typing import Any

from shared.errors import Conflict, RateLimited, Unauthorized, ValidationFailed


class EmailTaken(Conflict):
    code = "email_taken"


class WeakPassword(ValidationFailed):
    code = "weak_password"

    def __init__(self, message: str) -> None:
        details: list[dict[str, Any]] = [{"field": "password", "message": message}]
        super().__init__(f"The password is too weak: {message}.", details=details)


class TooManyAttempts(RateLimited):
    code = "too_many_attempts"


def invalid_credentials() -> Unauthorized:
    # One message for a wrong password and an unknown email, so the answer reveals no accounts.
    return Unauthorized("The email or password is wrong.", code="invalid_credentials")


def invalid_refresh_token() -> Unauthorized:
    return Unauthorized(
        "The refresh token is unknown, expired or revoked; sign in again.", code="invalid_refresh_token"
    )


def refresh_token_reused() -> Unauthorized:
    return Unauthorized(
        "This refresh token was already used, so its session has been revoked; sign in again.",
        code="refresh_token_reused",
    )
