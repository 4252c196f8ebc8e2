"""Functions served in-process for integration tests, verifying tokens as the gateway would."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from functions.auth.app import app as auth_app
from shared.config import get_function_settings
from shared.tokens import JwksKeySource, TokenVerifier


@contextlib.asynccontextmanager
async def verified_by_auth(*apps: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The auth app in-process (its client is yielded, for sign-up and sign-in), with each of ``apps``
    verifying tokens against the keys it publishes; every app's earlier verifier is put back afterwards."""
    settings = get_function_settings()
    auth = httpx.AsyncClient(transport=httpx.ASGITransport(app=auth_app), base_url="http://auth")

    async def fetch_jwks() -> dict[str, Any]:
        answer = await auth.get("/api/auth/.well-known/jwks.json")
        answer.raise_for_status()
        return dict(answer.json())

    verifier = TokenVerifier(JwksKeySource(fetch_jwks), issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    previous = [getattr(app.state, "token_verifier", None) for app in apps]
    for app in apps:
        app.state.token_verifier = verifier
    try:
        yield auth
    finally:
        for app, earlier in zip(apps, previous, strict=True):
            app.state.token_verifier = earlier
        await auth.aclose()


def client_of(app: Any) -> httpx.AsyncClient:
    """An HTTP client of ``app`` served in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
