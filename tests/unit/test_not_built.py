"""The not-built function: every method and path answers a clear 501, served directly or through Lambda.

No route points at it today; it stays for the next part of the API that has a route but no function yet
(the examples below use a made-up /api/billing).
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from mangum.types import LambdaContext

from functions.not_built.app import ALL_METHODS, app, handler, not_built_message


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(app)


def http_api_event(method: str, path: str, route_key: str, body: str | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as the managed and local gateways send it."""
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "api.example.com", "content-type": "application/json"},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": "req-not-built-1",
            "routeKey": route_key,
            "stage": "$default",
            "time": "26/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795694400000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


@pytest.mark.parametrize(
    ("method", "path", "route_key", "expected"),
    [
        ("get", "/api/images", None, "GET /api/images is not built yet in this Berth version."),
        (
            "POST",
            "/api/images",
            "ANY /api/images",
            "POST /api/images (route ANY /api/images) is not built yet in this Berth version.",
        ),
        (
            "DELETE",
            "/api/load-balancer/listeners/abc",
            "ANY /api/load-balancer/{proxy+}",
            "DELETE /api/load-balancer/listeners/abc (route ANY /api/load-balancer/{proxy+}) "
            "is not built yet in this Berth version.",
        ),
        ("GET", "/api/billing", "GET /api/billing", "GET /api/billing is not built yet in this Berth version."),
    ],
)
def test_message_names_the_request_and_route(method: str, path: str, route_key: str | None, expected: str) -> None:
    assert not_built_message(method, path, route_key) == expected


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m != "HEAD"])
@pytest.mark.parametrize(
    "path",
    ["/", "/api/images", "/api/load-balancer/listeners", "/api/billing/7.pdf", "/api/load-balancer/listeners/7/stats"],
)
def test_every_method_and_path_answers_501(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, headers={"X-Request-Id": "req-direct"})

    assert response.status_code == 501
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "not_implemented"
    assert error["message"] == f"{method} {path} is not built yet in this Berth version."
    assert error["request_id"] == "req-direct" == response.headers["x-request-id"]


def test_head_answers_501_without_a_body(client: TestClient) -> None:
    response = client.head("/api/images")

    assert response.status_code == 501
    assert response.content == b""


def test_a_body_does_not_change_the_answer(client: TestClient) -> None:
    response = client.post("/api/load-balancer/listeners", json={"service": "web", "protocol": "http"})

    assert response.status_code == 501
    assert response.json()["error"]["code"] == "not_implemented"


@pytest.mark.parametrize(
    ("method", "path", "route_key", "body"),
    [
        ("GET", "/api/images/i-42", "ANY /api/images/{proxy+}", None),
        ("POST", "/api/load-balancer/listeners", "ANY /api/load-balancer/{proxy+}", json.dumps({"service": "web"})),
        ("PATCH", "/api/service-discovery/services/web", "ANY /api/service-discovery/{proxy+}", "{}"),
        ("GET", "/api/billing/invoices", "ANY /api/billing/{proxy+}", None),
    ],
)
def test_lambda_handler_answers_a_v2_event_with_501(method: str, path: str, route_key: str, body: str | None) -> None:
    # The app never reads the Lambda context, so none is needed.
    result = handler(http_api_event(method, path, route_key, body), cast(LambdaContext, None))

    assert result["statusCode"] == 501
    assert result["headers"]["content-type"] == "application/json"
    assert result["isBase64Encoded"] is False
    error = json.loads(result["body"])["error"]
    assert error == {
        "code": "not_implemented",
        "message": f"{method} {path} (route {route_key}) is not built yet in this Berth version.",
        # The gateway's request id, so the access log and the answer agree.
        "request_id": "req-not-built-1",
    }
