"""Request and response bodies of the auth routes (the public contract's field names)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.auth.passwords import MAX_PASSWORD_LENGTH

# Far above the password policy's 128 characters: only bounds the hashing work a request can ask for.
MAX_PASSWORD_INPUT = 1024
# The policy's default minimum (BERTH_PASSWORD_MIN_LENGTH), as the document declares it for sign-up.
DEFAULT_PASSWORD_MIN_LENGTH = 10
# An address as the document declares it: an ASCII dot-atom local part (at most 64 characters) and a DNS
# name with a letters-only top-level label. Exactly this, so the document and the function agree on every
# string (pydantic's EmailStr also refused special-use domains and allowed internationalised ones).
EMAIL_PATTERN = (
    r"^[A-Za-z0-9_%+-]{1,64}(?:\.[A-Za-z0-9_%+-]{1,64}){0,8}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,63}$"
)


class _Request(BaseModel):
    # Unknown fields and coerced types are mistakes worth a 422, not something to guess around.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Credentials(_Request):
    email: str = Field(max_length=254, pattern=EMAIL_PATTERN)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_INPUT)

    @field_validator("email")
    @classmethod
    def _lower_case(cls, email: str) -> str:
        # One account per address whatever its case: stored and looked up in lower case.
        return email.lower()


class SignUpRequest(_Credentials):
    # The password policy (functions.auth.passwords) answers 422 weak_password outside these lengths; the
    # model keeps its wider bound so that the policy, not the model, explains a short password.
    password: str = Field(
        min_length=1,
        max_length=MAX_PASSWORD_INPUT,
        json_schema_extra={"minLength": DEFAULT_PASSWORD_MIN_LENGTH, "maxLength": MAX_PASSWORD_LENGTH},
    )


class SignInRequest(_Credentials):
    pass


class RefreshRequest(_Request):
    refresh_token: str = Field(min_length=1, max_length=4096)


class UserCreated(BaseModel):
    id: str
    email: str


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme name, not a secret
    expires_in: int


class UserProfile(BaseModel):
    id: str
    email: str
    role: str
    plan: str


# --- personal access tokens, account management, admin ---------------------------------------------

TokenScope = Literal["read", "deploy"]
# A token lives at most a year: long-lived secrets in CI are the ones that leak.
MAX_TOKEN_DAYS = 365


class TokenCreateRequest(_Request):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    scopes: list[TokenScope] = Field(min_length=1, max_length=2)
    expires_in_days: int = Field(ge=1, le=MAX_TOKEN_DAYS)


class TokenInfo(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = None
    last_used_ip: str | None = None


class TokenCreated(BaseModel):
    id: str
    name: str
    scopes: list[str]
    expires_at: datetime
    token: str


class TokenPage(BaseModel):
    items: list[TokenInfo]
    next_cursor: str | None = None


class PasswordChangeRequest(_Request):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_INPUT)
    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD_INPUT)


class PasswordChanged(BaseModel):
    sessions_ended: int


class EmailChangeRequest(_Request):
    new_email: str = Field(max_length=254, pattern=EMAIL_PATTERN)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_INPUT)

    @field_validator("new_email")
    @classmethod
    def _lower_case(cls, email: str) -> str:
        return email.lower()


class EmailChangePending(BaseModel):
    new_email: str
    expires_at: datetime


class EmailConfirmRequest(_Request):
    token: str = Field(min_length=1, max_length=256)


class AccountDeleteRequest(_Request):
    confirm: str = Field(min_length=1, max_length=320, description="the account's email, to confirm")


class AccountDeletion(BaseModel):
    id: str
    status: Literal["deleting", "deleted"]
    remaining: dict[str, int]


class AdminUser(BaseModel):
    id: str
    email: str
    role: str
    plan: str
    status: str
    created_at: datetime


class AdminUserPage(BaseModel):
    items: list[AdminUser]
    next_cursor: str | None = None
