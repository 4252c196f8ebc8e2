"""Platform metrics and correlated logs through the gateway: its /metrics and the functions' (aggregated on
the gateway's admin port) parse with Prometheus' parser and count the requests sent; a request id sent in
X-Request-Id is the one the function logs and the one on the worker's lines for the job it caused."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningGateway, RunningWorker, free_port, start_gateway, stop_process
from tests.e2e.conftest import sign_up_and_in
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def metered_gateway(
    tmp_path_factory: pytest.TempPathFactory, backing_services: None
) -> Iterator[tuple[RunningGateway, int]]:
    port = free_port()
    gateway = start_gateway(tmp_path_factory.mktemp("metered"), {"BERTH_GATEWAY_ADMIN_PORT": str(port)})
    yield gateway, port
    stop_process(gateway.process)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def test_gateway_and_function_metrics_count_the_requests_sent(metered_gateway: tuple[RunningGateway, int]) -> None:
    gateway, port = metered_gateway
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        # GIVEN a user; WHEN they list their alert rules 5 times and ask for one that does not exist
        user = sign_up_and_in(http)
        for _ in range(5):
            assert http.get("/api/alerts/rules", headers=user.auth_headers).status_code == 200
        assert http.get("/api/alerts/rules/nope", headers=user.auth_headers).status_code == 404
    # THEN the gateway's /metrics parses and counts them by route and status, as do the function's figures
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = _samples(text)
    assert _value(samples, "berth_gateway_requests_total", route="GET /api/alerts/rules", status="200") == 5
    assert _value(samples, "berth_gateway_requests_total", route="GET /api/alerts/rules/{rule_id}", status="404") == 1
    assert _value(samples, "berth_gateway_request_duration_seconds_count", route="GET /api/alerts/rules") == 5
    assert (
        _value(samples, "berth_function_requests_total", function="alerts", route="/api/alerts/rules", status="200")
        == 5
    )
    assert _value(samples, "berth_function_request_duration_seconds_count", function="alerts") == 6
    assert _value(samples, "berth_function_cold_starts_total", function="alerts") >= 1
    assert _value(samples, "berth_gateway_function_cold_starts_total", function="AlertsFunction") >= 1


def test_a_request_id_follows_the_request_into_the_worker(
    client: httpx.Client, worker: RunningWorker, gateway: RunningGateway
) -> None:
    # GIVEN a user with an image record; WHEN they delete it (a job for a worker) with their own request id
    user = sign_up_and_in(client)
    image = client.post("/api/images", json={"name": "trail", "tag": "v1"}, headers=user.auth_headers)
    assert image.status_code == 201, image.text
    request_id = f"trail-{secrets.token_hex(8)}"
    deleted = client.delete(
        f"/api/images/{image.json()['id']}", headers={**user.auth_headers, "X-Request-Id": request_id}
    )
    # THEN the gateway answers with that id, and the worker's lines for the job carry it
    assert deleted.status_code == 204, deleted.text
    assert deleted.headers["x-request-id"] == request_id

    def worker_lines() -> list[dict[str, Any]]:
        found = []
        for line in worker.log().splitlines():
            if request_id in line and line.startswith("{"):
                found.append(json.loads(line))
        return found

    lines = wait_until(worker_lines, timeout=60, interval=0.5, message="the worker never logged the request id")
    assert all(line["request_id"] == request_id for line in lines)
    assert any(line.get("job_id") for line in lines)
