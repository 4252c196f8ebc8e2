"""The auth function through its Lambda handler (Mangum), fed API Gateway HTTP API v2.0 events."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import psycopg
import pytest

from functions.auth.app import handler
from shared.cache import get_redis
from shared.config import get_function_settings
from shared.db import get_database

PASSWORD = "correct horse battery"


class LambdaRuntime:
    """Invokes the handler on one thread with one event loop, as a warm Lambda execution environment does."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda")
        self._loop = self._thread.submit(self._install_loop).result()

    @staticmethod
    def _install_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        return loop

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        context = type(
            "Context",
            (),
            {
                "aws_request_id": event["requestContext"]["requestId"],
                "function_name": "auth",
                "get_remaining_time_in_millis": lambda: 29000,
            },
        )()
        return dict(self._thread.submit(handler, event, context).result(timeout=60))

    def close(self) -> None:
        async def close_clients() -> None:
            settings = get_function_settings()
            await get_database(settings.database_url, settings.database_pool_max).close()
            await get_redis(settings.redis_url).aclose()

        self._thread.submit(lambda: self._loop.run_until_complete(close_clients())).result()
        self._thread.submit(self._loop.close).result()
        self._thread.shutdown()


@pytest.fixture(scope="module")
def runtime() -> Iterator[LambdaRuntime]:
    lambda_runtime = LambdaRuntime()
    yield lambda_runtime
    lambda_runtime.close()


@pytest.fixture
def email() -> Iterator[str]:
    address = f"lambda-{secrets.token_hex(6)}@example.com"
    yield address
    with psycopg.connect(get_function_settings().database_url) as conn:
        conn.execute("DELETE FROM users WHERE email = %s", (address,))


def http_api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    raw_body: bytes | None = None,
    headers: dict[str, str] | None = None,
    claims: dict[str, str] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) proxy event, as the managed or local gateway sends it."""
    content = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
    request_id = secrets.token_hex(8)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "host": "127.0.0.1:8080",
            "user-agent": "pytest",
            "content-type": "application/json",
            **(headers or {}),
        },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "127",
            "requestId": request_id,
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
        },
        "isBase64Encoded": base64_body,
    }
    if content is not None:
        event["body"] = base64.b64encode(content).decode() if base64_body else content.decode()
    if claims is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return event


def body_of(response: dict[str, Any]) -> Any:
    raw = response["body"]
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return json.loads(raw) if raw else None


def authorizer_claims(access_token: str) -> dict[str, str]:
    # API Gateway's JWT authorizer hands the function every claim as a string.
    decoded = jwt.decode(access_token, options={"verify_signature": False})
    return {name: str(value) for name, value in decoded.items()}


def sign_up_and_in(runtime: LambdaRuntime, email: str) -> dict[str, Any]:
    created = runtime.invoke(http_api_event("POST", "/api/auth/signup", body={"email": email, "password": PASSWORD}))
    assert created["statusCode"] == 201, created
    signed_in = runtime.invoke(http_api_event("POST", "/api/auth/signin", body={"email": email, "password": PASSWORD}))
    assert signed_in["statusCode"] == 200, signed_in
    return {"id": body_of(created)["id"], **body_of(signed_in)}


def test_signup_signin_and_me_with_the_gateways_claims(runtime: LambdaRuntime, email: str) -> None:
    tokens = sign_up_and_in(runtime, email)

    # Behind the gateway there is no need for the function to see the token itself: claims suffice.
    me = runtime.invoke(http_api_event("GET", "/api/auth/me", claims=authorizer_claims(tokens["access_token"])))

    assert me["statusCode"] == 200
    assert body_of(me) == {"id": tokens["id"], "email": email, "role": "user", "plan": "free"}


def test_me_with_a_bearer_token_and_no_gateway_claims(runtime: LambdaRuntime, email: str) -> None:
    tokens = sign_up_and_in(runtime, email)
    me = runtime.invoke(
        http_api_event("GET", "/api/auth/me", headers={"authorization": f"Bearer {tokens['access_token']}"})
    )
    assert me["statusCode"] == 200
    assert body_of(me)["id"] == tokens["id"]


def test_signout_then_the_gateways_claims_are_refused(runtime: LambdaRuntime, email: str) -> None:
    tokens = sign_up_and_in(runtime, email)
    claims = authorizer_claims(tokens["access_token"])

    signed_out = runtime.invoke(http_api_event("POST", "/api/auth/signout", claims=claims))
    assert signed_out["statusCode"] == 204

    me = runtime.invoke(http_api_event("GET", "/api/auth/me", claims=claims))
    assert me["statusCode"] == 401
    assert body_of(me)["error"]["code"] == "session_revoked"
    refreshed = runtime.invoke(
        http_api_event("POST", "/api/auth/refresh", body={"refresh_token": tokens["refresh_token"]})
    )
    assert refreshed["statusCode"] == 401
    assert body_of(refreshed)["error"]["code"] == "invalid_refresh_token"


def test_refresh_and_reuse_through_the_handler(runtime: LambdaRuntime, email: str) -> None:
    tokens = sign_up_and_in(runtime, email)
    event = http_api_event("POST", "/api/auth/refresh", body={"refresh_token": tokens["refresh_token"]})
    assert runtime.invoke(event)["statusCode"] == 200

    reused = runtime.invoke(
        http_api_event("POST", "/api/auth/refresh", body={"refresh_token": tokens["refresh_token"]})
    )
    assert reused["statusCode"] == 401
    assert body_of(reused)["error"]["code"] == "refresh_token_reused"


def test_a_base64_encoded_body_is_understood(runtime: LambdaRuntime, email: str) -> None:
    event = http_api_event("POST", "/api/auth/signup", body={"email": email, "password": PASSWORD}, base64_body=True)
    response = runtime.invoke(event)
    assert response["statusCode"] == 201
    assert body_of(response)["email"] == email


def test_malformed_json_answers_400_with_the_events_request_id(runtime: LambdaRuntime) -> None:
    event = http_api_event("POST", "/api/auth/signin", raw_body=b'{"email": ')
    response = runtime.invoke(event)
    assert response["statusCode"] == 400
    error = body_of(response)["error"]
    assert error["code"] == "invalid_json"
    assert error["request_id"] == event["requestContext"]["requestId"]
    assert response["headers"]["x-request-id"] == event["requestContext"]["requestId"]


def test_unknown_fields_answer_422(runtime: LambdaRuntime) -> None:
    response = runtime.invoke(
        http_api_event(
            "POST", "/api/auth/signup", body={"email": "ada@example.com", "password": PASSWORD, "plan": "pro"}
        )
    )
    assert response["statusCode"] == 422
    assert body_of(response)["error"]["details"] == [{"field": "plan", "message": "is not a known field"}]


def test_discovery_documents_through_the_handler(runtime: LambdaRuntime) -> None:
    config = runtime.invoke(http_api_event("GET", "/api/auth/.well-known/openid-configuration"))
    jwks = runtime.invoke(http_api_event("GET", "/api/auth/.well-known/jwks.json"))
    assert config["statusCode"] == jwks["statusCode"] == 200
    assert body_of(config)["issuer"] == get_function_settings().jwt_issuer
    assert body_of(jwks)["keys"]
    assert "max-age" in jwks["headers"]["cache-control"]
