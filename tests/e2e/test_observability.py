"""Platform metrics and correlated logs through the gateway: its /metrics and the functions' (aggregated on
the gateway's admin port) parse with Prometheus' parser and count the requests sent; a request id sent in
X-Request-Id is on the function's own log lines and on the worker's lines for the job it caused, and the
caller (only they) reads those lines back as the request's trail, through the API and `berth logs --request`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    PROJECT_ROOT,
    UNLIMITED,
    RunningGateway,
    RunningWorker,
    free_port,
    start_gateway,
    stop_process,
)
from tests.e2e.conftest import sign_up_and_in
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def metered_gateway(
    tmp_path_factory: pytest.TempPathFactory, backing_services: None
) -> Iterator[tuple[RunningGateway, int]]:
    port = free_port()
    # INFO: the functions' own lines (the request id test reads them); the session's gateway logs warnings only.
    env = {**UNLIMITED, "BERTH_GATEWAY_ADMIN_PORT": str(port), "BERTH_LOG_LEVEL": "INFO"}
    gateway = start_gateway(tmp_path_factory.mktemp("metered"), env)
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


def _json_lines(text: str, request_id: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` that carry ``request_id``."""
    found = []
    for line in text.splitlines():
        if request_id in line and line.startswith("{"):
            record = json.loads(line)
            if record.get("request_id") == request_id:
                found.append(record)
    return found


def test_a_request_id_follows_the_request_into_the_function_and_the_worker_and_back(
    metered_gateway: tuple[RunningGateway, int], worker: RunningWorker, tmp_path: Path
) -> None:
    gateway, _ = metered_gateway
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        # GIVEN a user with an image record; WHEN they delete it (a job for a worker) with their own request id
        user = sign_up_and_in(client)
        image = client.post("/api/images", json={"name": "trail", "tag": "v1"}, headers=user.auth_headers)
        assert image.status_code == 201, image.text
        request_id = f"trail-{secrets.token_hex(8)}"
        deleted = client.delete(
            f"/api/images/{image.json()['id']}", headers={**user.auth_headers, "X-Request-Id": request_id}
        )
        # THEN the gateway answers with that id ...
        assert deleted.status_code == 204, deleted.text
        assert deleted.headers["x-request-id"] == request_id

        # ... the worker's lines for the job carry it
        lines = wait_until(
            lambda: _json_lines(worker.log(), request_id),
            timeout=60,
            interval=0.5,
            message="the worker never logged the request id",
        )
        worker_jobs = {line["job_id"] for line in lines if line.get("job_id")}
        assert worker_jobs
        assert all(line["user_id"] == user.id for line in lines)

        # ... and so do the function's own lines (the images function's instance, not the gateway's access
        # line): it sent that very job, and it answered the request
        function_lines = [line for line in _json_lines(gateway.access_log(), request_id) if "service" in line]
        sent = [line for line in function_lines if line["message"] == "job sent"]
        assert [line["job_id"] for line in sent] == sorted(worker_jobs), function_lines
        answered = [line for line in function_lines if line["message"] == "request answered"]
        assert [(line["service"], line["status"], line["user_id"]) for line in answered] == [("images", 204, user.id)]

        # WHEN the user reads the request's trail THEN it holds the function's and the worker's lines, in order
        # (the job may first come back with "job will retry": it is sent just before the delete commits, and
        # waits for the commit)
        def trail_with_the_job_done() -> dict[str, Any] | None:
            answer = client.get(f"/api/requests/{request_id}", headers=user.auth_headers)
            assert answer.status_code in (200, 404), answer.text
            body = dict(answer.json())
            if answer.status_code == 404 or not any(
                (e["source"], e["message"]) == ("worker", "job done") for e in body["events"]
            ):
                return None
            return body

        trail = wait_until(trail_with_the_job_done, timeout=60, interval=0.5, message="no 'job done' in the trail")
        events = trail["events"]
        assert trail["request_id"] == request_id and trail["truncated"] is False
        assert [e["at"] for e in events] == sorted(e["at"] for e in events)
        messages = [(e["source"], e["service"], e["message"]) for e in events]
        assert ("function", "images", "job sent") in messages
        assert ("function", "images", "request answered") in messages
        assert ("worker", "worker", "job done") in messages
        assert {e["fields"]["job_id"] for e in events if e["fields"].get("job_id")} == worker_jobs

        # AND another user sees none of it, even after using the same request id for a request of their own
        stranger = sign_up_and_in(client)
        assert client.get(f"/api/requests/{request_id}", headers=stranger.auth_headers).status_code == 404
        own = client.post(
            "/api/images",
            json={"name": "other", "tag": "v1"},
            headers={**stranger.auth_headers, "X-Request-Id": request_id},
        )
        assert own.status_code == 201, own.text
        theirs = client.get(f"/api/requests/{request_id}", headers=stranger.auth_headers).json()["events"]
        assert [(e["message"], e["fields"].get("route")) for e in theirs] == [("request answered", "/api/images")]
        mine = client.get(f"/api/requests/{request_id}", headers=user.auth_headers).json()["events"]
        assert mine == events
        # a plain read keeps no trail; a malformed id is a clear 422
        listed = client.get("/api/images", headers={**user.auth_headers, "X-Request-Id": f"{request_id}-read"})
        assert listed.status_code == 200
        assert client.get(f"/api/requests/{request_id}-read", headers=user.auth_headers).status_code == 404
        bad = client.get("/api/requests/" + "x" * 129, headers=user.auth_headers)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_failed"

    # AND `berth logs --request` prints the same trail, one line per event; another user's is not theirs
    def berth_logs(request: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "NO_COLOR": "1"}
        env.pop("BERTH_TOKEN", None)
        command = [sys.executable, "-m", "cli.main", "logs", "--request", request, "--api", gateway.url]
        return subprocess.run(
            [*command, "--token", token, *extra], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
        )

    printed = berth_logs(request_id, user.access_token)
    assert printed.returncode == 0, printed.stderr
    printed_lines = printed.stdout.splitlines()
    assert len(printed_lines) == len(events), printed.stdout
    for event, line in zip(events, printed_lines, strict=True):
        assert line.startswith(event["at"]) and event["message"] in line
    assert "job_id=" in printed.stdout
    assert json.loads(berth_logs(request_id, stranger.access_token, "--json").stdout)["events"] == theirs
    missing = berth_logs(f"nope-{request_id}", user.access_token)
    assert missing.returncode == 5, missing.stderr  # ExitCode.NOT_FOUND
