"""Users as a client of the public API makes them: sign up and sign in through the gateway."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx
import pytest


@pytest.fixture(autouse=True)
def _backing_services(backing_services: None) -> None:
    """Every end-to-end test may talk to PostgreSQL, Redis and moto, directly or through the gateway."""


@dataclass
class SignedInUser:
    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def sign_up_and_in(client: httpx.Client, email: str | None = None) -> SignedInUser:
    email = email or f"user-{secrets.token_hex(6)}@example.com"
    password = "correct horse " + secrets.token_hex(4)
    created = client.post("/api/auth/signup", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    tokens = client.post("/api/auth/signin", json={"email": email, "password": password})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return SignedInUser(created.json()["id"], email, password, body["access_token"], body["refresh_token"])


@pytest.fixture
def signed_in_user(client: httpx.Client) -> SignedInUser:
    """A fresh user, signed in through the gateway."""
    return sign_up_and_in(client)
