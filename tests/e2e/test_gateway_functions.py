"""Functions behind the gateway as on Lambda: the events they get, their instances, and their failures.

The gateway here reads the test fixture document (tests/fixtures/gateway/), whose probe functions echo
what they receive, crash, hang or answer malformed responses on purpose.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.tokens import generate_rsa_key, issue_access_token, public_jwk
from tests.conftest import RunningGateway, start_gateway, stop_process
from tests.fixtures.gateway.support import access_log_entry, function_pids, is_alive
from tests.support.waiting import wait_until

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gateway"
ECHO = "gateway_probe:echo"
TIMEOUT_SECONDS = 2
CONCURRENCY = 2
PROBE_KEY = generate_rsa_key()


def _probe_gateway(tmp_path: Path) -> RunningGateway:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(PROBE_KEY, "probe-key")]}))
    return start_gateway(
        tmp_path,
        {
            "BERTH_GATEWAY_SPEC": str(FIXTURES / "openapi.yaml"),
            "BERTH_GATEWAY_TEMPLATE": str(FIXTURES / "template.yaml"),
            "BERTH_GATEWAY_FUNCTION_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "BERTH_GATEWAY_FUNCTION_CONCURRENCY": str(CONCURRENCY),
            "BERTH_PROBE_JWKS_FILE": str(jwks),
            "BERTH_PROBE_SLEEP_MARKER": str(tmp_path / "sleeping"),
        },
    )


@pytest.fixture(scope="module")
def probe_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    running = _probe_gateway(tmp_path_factory.mktemp("probe"))
    yield running
    stop_process(running.process)


@pytest.fixture
def probe(probe_gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=probe_gateway.url, timeout=30) as client:
        yield client


def _echo(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_function_gets_an_api_gateway_v2_event_and_a_lambda_context(probe: httpx.Client) -> None:
    response = probe.get(
        "/probe/items/42?a=1&a=2&q=x%20y", headers=[("X-Dup", "1"), ("X-Dup", "2"), ("Cookie", "c=1; d=2")]
    )
    body = _echo(response)
    event, context = body["event"], body["context"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /probe/items/{id}"
    assert event["rawPath"] == "/probe/items/42"
    assert event["rawQueryString"] == "a=1&a=2&q=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "q": "x y"}
    assert event["pathParameters"] == {"id": "42"}
    assert event["cookies"] == ["c=1", "d=2"]
    assert event["headers"]["x-dup"] == "1,2"
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert "cookie" not in event["headers"]
    request_context = event["requestContext"]
    assert request_context["requestId"] == response.headers["apigw-requestid"] == response.headers["x-request-id"]
    assert request_context["http"]["sourceIp"] == "127.0.0.1"
    assert request_context["stage"] == "$default"
    assert "authorizer" not in request_context
    assert context["function_name"] == "EchoFunction"
    assert context["memory_limit_in_mb"] == 256
    assert context["invoked_function_arn"].endswith(":function:EchoFunction")
    assert context["aws_request_id"] and context["aws_request_id"] != request_context["requestId"]
    assert 0 < context["remaining_ms"] <= TIMEOUT_SECONDS * 1000


def test_verified_claims_reach_the_function_as_strings(probe: httpx.Client, probe_gateway: RunningGateway) -> None:
    token = issue_access_token(
        PROBE_KEY,
        "probe-key",
        issuer=probe_gateway.env["BERTH_JWT_ISSUER"],
        audience="berth-api",
        ttl_seconds=300,
        subject="user-1",
        email="u@example.com",
        role="user",
        plan="free",
        session_id="session-1",
    )
    event = _echo(probe.delete("/probe/private/things/7", headers={"Authorization": f"Bearer {token}"}))["event"]
    jwt_context = event["requestContext"]["authorizer"]["jwt"]
    claims = jwt_context["claims"]
    assert claims["sub"] == "user-1"
    assert claims["sid"] == "session-1"
    assert all(isinstance(value, str) for value in claims.values())
    assert claims["exp"].isdigit()
    assert jwt_context["scopes"] is None
    assert event["pathParameters"] == {"proxy": "things/7"}
    assert probe.get("/probe/private/things/7").status_code == 401


def test_binary_bodies_travel_base64_both_ways(probe: httpx.Client) -> None:
    payload = bytes(range(256))
    event = _echo(
        probe.post("/probe/public/upload", content=payload, headers={"content-type": "application/octet-stream"})
    )["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload
    text = _echo(probe.post("/probe/public/upload", json={"name": "n\u00e9"}))["event"]
    assert text["isBase64Encoded"] is False
    assert json.loads(text["body"]) == {"name": "n\u00e9"}
    binary = probe.get("/probe/public/binary")
    assert binary.content == payload
    assert binary.headers["content-type"] == "application/octet-stream"


def test_response_cookies_and_repeated_headers_are_passed_on(probe: httpx.Client) -> None:
    response = probe.get("/probe/public/cookies")
    assert response.status_code == 201
    assert response.text == "cookies set"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]
    assert response.headers.get_list("x-many") == ["a", "b"]
    assert response.headers["x-one"] == "1"


def test_a_result_without_status_code_is_a_json_200(probe: httpx.Client) -> None:
    response = probe.get("/probe/public/plain")
    assert response.status_code == 200
    assert response.json()["plain"] is True


def test_an_operation_body_limit_overrides_the_documents(probe: httpx.Client) -> None:
    assert probe.post("/probe/small", content=b"x" * 16).status_code == 200
    refused = probe.post("/probe/small", content=b"x" * 17)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "payload_too_large"


def test_a_warm_instance_is_reused(probe: httpx.Client) -> None:
    pids = {_echo(probe.get("/probe/public/warm"))["pid"] for _ in range(5)}
    assert len(pids) == 1


def test_a_crashed_instance_is_a_502_and_is_replaced(probe: httpx.Client, probe_gateway: RunningGateway) -> None:
    warm_pid = _echo(probe.get("/probe/public/before"))["pid"]
    crashed = probe.get("/probe/public/crash")  # the idle instance used last is used next
    assert crashed.status_code == 502
    assert crashed.json()["error"]["code"] == "function_crashed"
    wait_until(lambda: not is_alive(warm_pid), message=f"the crashed instance {warm_pid} is still alive")
    assert warm_pid not in function_pids(probe_gateway.process.pid, ECHO)
    assert _echo(probe.get("/probe/public/after"))["pid"] != warm_pid


def test_a_timed_out_instance_is_killed_with_a_504(probe: httpx.Client, probe_gateway: RunningGateway) -> None:
    warm_pid = _echo(probe.get("/probe/public/before"))["pid"]
    response = probe.get("/probe/public/sleep", params={"seconds": "20"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "function_timeout"
    # The answer came at the function timeout, long before the 20 s sleep would end. Measured by the gateway
    # itself (the access log's latency, from the request's arrival to its answer), not by this busy client.
    request_id = response.headers["x-request-id"]
    entry = wait_until(
        lambda: access_log_entry(probe_gateway.access_log(), request_id), message="the 504 was not logged"
    )
    assert TIMEOUT_SECONDS - 0.2 <= entry["latency_ms"] / 1000 < TIMEOUT_SECONDS + 3
    wait_until(lambda: not is_alive(warm_pid), message=f"the timed-out instance {warm_pid} is still alive")
    assert _echo(probe.get("/probe/public/after"))["pid"] != warm_pid


def test_a_handler_exception_is_a_502_and_the_instance_lives_on(probe: httpx.Client) -> None:
    warm_pid = _echo(probe.get("/probe/public/before"))["pid"]
    failed = probe.get("/probe/public/raise")
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "function_error"
    assert "the probe was asked to raise" not in failed.text  # internals stay in the function's log
    assert _echo(probe.get("/probe/public/after"))["pid"] == warm_pid


def test_a_malformed_response_is_a_502(probe: httpx.Client) -> None:
    response = probe.get("/probe/public/bad-status")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "bad_function_response"


def test_instances_never_exceed_the_concurrency_and_requests_wait_for_one(probe_gateway: RunningGateway) -> None:
    def slow(index: int) -> tuple[int, int]:
        with httpx.Client(base_url=probe_gateway.url, timeout=30) as client:
            response = client.get("/probe/public/sleep", params={"seconds": "0.8", "n": str(index)})
            return response.status_code, int(response.json()["pid"])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(slow, range(4)))
    elapsed = time.monotonic() - started
    assert [status for status, _ in results] == [200] * 4
    assert len({pid for _, pid in results}) <= CONCURRENCY
    assert len(function_pids(probe_gateway.process.pid, ECHO)) <= CONCURRENCY
    assert elapsed >= 1.6  # two rounds of two


def test_sigterm_finishes_in_flight_requests_then_stops_every_function(tmp_path: Path) -> None:
    running = _probe_gateway(tmp_path)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            _echo(client.get("/probe/public/warm"))
        instances = function_pids(running.process.pid, ECHO)
        assert instances
        outcome: dict[str, Any] = {}

        def in_flight() -> None:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                outcome["response"] = client.get("/probe/public/sleep", params={"seconds": "1.5"})

        request = threading.Thread(target=in_flight)
        request.start()
        sleeping = Path(running.env["BERTH_PROBE_SLEEP_MARKER"])
        wait_until(sleeping.exists, message="the request never reached the function")
        running.process.send_signal(signal.SIGTERM)
        request.join(timeout=20)
        assert outcome["response"].status_code == 200
        # uvicorn re-raises the captured SIGTERM once drained, so a supervisor sees why it stopped
        assert running.process.wait(timeout=20) in (0, -signal.SIGTERM)
        for pid in instances:
            wait_until(lambda pid=pid: not is_alive(pid), message=f"function instance {pid} outlived the gateway")
    finally:
        stop_process(running.process)
