"""The gateway as an HTTP front door: body limits, CORS, access log, TLS, and where functions run."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.spec import load_yaml
from tests.conftest import PROJECT_ROOT, UNLIMITED, RunningGateway, start_gateway, stop_process
from tests.e2e.conftest import SignedInUser
from tests.fixtures.gateway.support import access_log_entry, function_pids
from tests.support.waiting import wait_until

DOCUMENT = load_yaml(PROJECT_ROOT / "gateway-config" / "openapi.yaml")
CORS = DOCUMENT["x-amazon-apigateway-cors"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(client: httpx.Client) -> None:
    too_big = b"x" * (2 * 1024 * 1024)
    response = client.post("/api/auth/signup", content=too_big, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_chunked_body_is_cut_off_at_the_limit(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"x" * 32 * 1024

    response = client.post("/api/auth/signin", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


def test_malformed_json_is_a_400_from_the_function(client: httpx.Client) -> None:
    response = client.post("/api/auth/signin", content=b'{"email": ', headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_preflight_from_an_allowed_origin_is_answered_by_the_gateway(client: httpx.Client) -> None:
    origin = CORS["allowOrigins"][0]
    response = client.options(
        "/api/auth/me",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == origin
    assert "GET" in response.headers["access-control-allow-methods"].split(",")
    assert "authorization" in response.headers["access-control-allow-headers"].split(",")
    assert response.headers["access-control-max-age"] == str(CORS["maxAge"])


def test_other_origins_get_no_cors_headers(client: httpx.Client) -> None:
    preflight = client.options(
        "/api/auth/me", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 204
    assert "access-control-allow-origin" not in preflight.headers
    plain = client.get("/api/auth/.well-known/jwks.json", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_answers_to_an_allowed_origin_carry_cors_headers(client: httpx.Client) -> None:
    origin = CORS["allowOrigins"][0]
    for response in (
        client.get("/api/auth/.well-known/jwks.json", headers={"Origin": origin}),
        client.get("/api/auth/me", headers={"Origin": origin}),
    ):  # errors too
        assert response.headers["access-control-allow-origin"] == origin
        exposed = response.headers["access-control-expose-headers"].split(",")
        assert set(exposed) == {header.lower() for header in CORS["exposeHeaders"]}


def test_each_request_writes_one_access_log_line_without_secrets(
    client: httpx.Client, gateway: RunningGateway, signed_in_user: SignedInUser
) -> None:
    response = client.get(
        "/api/auth/me",
        params={"password": "hunter2-in-a-query"},
        headers=signed_in_user.auth_headers | {"Cookie": "session=cookie-secret"},
    )
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    entry = wait_until(lambda: access_log_entry(gateway.access_log(), request_id), message="the request was not logged")
    assert entry["ip"] == "127.0.0.1"
    assert entry["method"] == "GET"
    assert entry["path"] == "/api/auth/me"
    assert entry["route"] == "GET /api/auth/me"
    assert entry["status"] == 200
    assert entry["user"] == signed_in_user.id
    assert entry["bytes"] == len(response.content)
    assert entry["function"] == "AuthFunction"
    assert entry["latency_ms"] > 0
    assert set(entry) == {
        "time",
        "request_id",
        "ip",
        "method",
        "path",
        "route",
        "status",
        "latency_ms",
        "user",
        "bytes",
        "function",
    }
    log = gateway.access_log()
    assert sum(1 for line in log.splitlines() if request_id in line and '"latency_ms"' in line) == 1
    for secret in (
        signed_in_user.access_token,
        signed_in_user.password,
        "hunter2-in-a-query",
        "cookie-secret",
        signed_in_user.refresh_token,
    ):
        assert secret not in log


def test_refused_and_unknown_requests_are_logged_too(client: httpx.Client, gateway: RunningGateway) -> None:
    refused = client.get("/api/auth/me", headers={"Authorization": "Bearer not-a-token"})
    unknown = client.get("/api/nowhere")
    for response, route, function in ((refused, "GET /api/auth/me", "AuthFunction"), (unknown, "-", "-")):
        request_id = response.headers["x-request-id"]
        entry = wait_until(
            lambda rid=request_id: access_log_entry(gateway.access_log(), rid), message=f"{route} was not logged"
        )
        assert (entry["status"], entry["route"], entry["function"], entry["user"]) == (
            response.status_code,
            route,
            function,
            "-",
        )
    assert "not-a-token" not in gateway.access_log()


def test_functions_run_in_processes_of_their_own(
    client: httpx.Client, gateway: RunningGateway, signed_in_user: SignedInUser
) -> None:
    assert client.get("/api/auth/me", headers=signed_in_user.auth_headers).status_code == 200
    assert client.get("/ui/").status_code == 200
    gateway_pid = gateway.process.pid
    auth = function_pids(gateway_pid, "functions.auth.app:handler")
    ui = function_pids(gateway_pid, "functions.ui.app:handler")
    assert auth and ui
    assert not auth & ui
    assert gateway_pid not in auth | ui
    assert os.getpid() not in auth | ui


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    running = start_gateway(tmp_path, UNLIMITED, tls=True)
    yield running
    stop_process(running.process)


def test_tls_serves_https_with_a_generated_certificate(tls_gateway: RunningGateway, tmp_path: Path) -> None:
    assert tls_gateway.url.startswith("https://")
    with httpx.Client(base_url=tls_gateway.url, verify=False, timeout=30) as client:
        response = client.get("/api/auth/.well-known/openid-configuration")
        assert response.status_code == 200
        assert json.loads(response.text)["issuer"] == tls_gateway.env["BERTH_JWT_ISSUER"]
    certificate = tmp_path / "tls" / "gateway.crt"
    assert certificate.is_file()
    # the certificate is the one served, and it is not trusted by default (self-signed)
    with httpx.Client(base_url=tls_gateway.url, timeout=10) as strict, pytest.raises(httpx.ConnectError):
        strict.get("/api/auth/.well-known/jwks.json")
    trusting = ssl.create_default_context(cafile=str(certificate))
    with httpx.Client(base_url=tls_gateway.url, verify=trusting, timeout=10) as client:
        assert client.get("/api/auth/.well-known/jwks.json").status_code == 200
