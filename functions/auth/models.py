"""Request and response bodies of the auth routes (the public contract's field names)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

# Far above the password policy's 128 characters: only bounds the hashing work a request can ask for.
MAX_PASSWORD_INPUT = 1024


class _Request(BaseModel):
    # Unknown fields and coerced types are mistakes worth a 422, not something to guess around.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Credentials(_Request):
    email: EmailStr
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_INPUT)

    @field_validator("email")
    @classmethod
    def _lower_case(cls, email: str) -> str:
        # One account per address whatever its case: stored and looked up in lower case.
        return email.lower()


class SignUpRequest(_Credentials):
    pass


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
