"""Alerts through the gateway: a webhook receiver on 127.0.0.1 gets one signed `firing` notification after
a container with restart policy "no" is killed, and one `resolved` after it is started again; a quota_use rule
fires once a free-plan user holds its share of their container quota and resolves below it; the documented
verification refuses a replayed or tampered delivery; bad input is a clear 4xx."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest

from shared.config import get_function_settings
from shared.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.conftest import start_gateway, stop_process
from tests.e2e.conftest import sign_up_and_in
from tests.e2e.test_containers import _create, _user, _wait_for, owners, web_archive  # noqa: F401
from tests.e2e.test_images import upload_and_process
from tests.support.waiting import wait_until
from worker.container_runtime import CONTAINER_ID_LABEL

SECRET = "test-webhook-secret-0123456789"


class Receiver:
    """A tiny webhook receiver: records each POST's headers and exact body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def states(self) -> list[str]:
        return [json.loads(body)["status"] for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


def test_killed_container_fires_then_resolves_with_signed_notifications(
    client: httpx.Client,
    worker: Any,
    web_archive: Path,  # noqa: F811
    docker_client: docker.DockerClient,
    owners: list[str],  # noqa: F811
    receiver: Receiver,
) -> None:
    # GIVEN a running container with restart policy "no", a webhook and a rule on it
    user = _user(client, owners)
    image = upload_and_process(client, user, "web", web_archive)
    created = _create(
        client,
        user,
        {"image_id": image["id"], "name": "watched", "restart_policy": "no", "ports": [{"container_port": 8080}]},
    )
    assert created.status_code == 202, created.text
    container_id = created.json()["id"]
    _wait_for(client, user, container_id, "running")
    hook = client.post("/api/alerts/webhooks", json={"url": receiver.url, "secret": SECRET}, headers=user.auth_headers)
    assert hook.status_code == 201, hook.text
    assert "secret" not in hook.json()
    listed = client.get("/api/alerts/webhooks", headers=user.auth_headers).json()
    assert [item["id"] for item in listed["items"]] == [hook.json()["id"]]
    assert "secret" not in json.dumps(listed)
    for_seconds = 2
    rule = client.post(
        "/api/alerts/rules",
        json={"kind": "container_unhealthy", "container_id": container_id, "for_seconds": for_seconds},
        headers=user.auth_headers,
    )
    assert rule.status_code == 201, rule.text
    assert rule.json()["state"] == "ok"

    # WHEN the container is killed outside Berth
    [running] = docker_client.containers.list(
        ignore_removed=True, filters={"label": f"{CONTAINER_ID_LABEL}={container_id}"}
    )
    killed_at = time.monotonic()
    running.kill()

    # THEN one signed firing notification arrives within for_seconds + 10 s
    wait_until(lambda: "firing" in receiver.states(), timeout=for_seconds + 10, interval=0.2, message="no firing")
    assert time.monotonic() - killed_at <= for_seconds + 10 + 1
    headers, body = receiver.received[0]
    assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
    payload = json.loads(body)
    assert payload["version"] == "4" and payload["status"] == "firing"
    assert payload["alerts"][0]["labels"]["alertname"] == "container_unhealthy"
    assert payload["berth"]["rule_id"] == rule.json()["id"]
    firing = client.get("/api/alerts", params={"state": "firing"}, headers=user.auth_headers).json()["items"]
    assert [a["rule_id"] for a in firing] == [rule.json()["id"]]

    # AND a replayed (old timestamp) or tampered delivery fails the documented verification
    timestamp, signature = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
    assert not verify_signature(SECRET, body, timestamp, signature, now=int(timestamp) + 3600)
    assert not verify_signature(SECRET, body.replace(b"firing", b"resolved"), timestamp, signature)
    assert not verify_signature(SECRET, body, str(int(timestamp) + 1), signature)

    # WHEN the container is started again
    started = client.post(f"/api/containers/{container_id}/start", headers=user.auth_headers)
    assert started.status_code == 202, started.text

    # THEN exactly one resolved notification follows, signed too, and no second firing
    wait_until(lambda: "resolved" in receiver.states(), timeout=60, interval=0.3, message="no resolved")
    time.sleep(2)  # a duplicate would arrive within a few delivery rounds
    assert receiver.states() == ["firing", "resolved"]
    headers, body = receiver.received[1]
    assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
    history = client.get("/api/alerts", headers=user.auth_headers).json()["items"]
    assert history[0]["state"] == "resolved" and history[0]["resolved_at"]


def _sql(query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(get_function_settings().database_url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def _wait_for_a_round_after_now(rule_id: str) -> None:
    """Wait until the workers evaluated ``rule_id`` in a transaction that began after this call (so it saw
    everything committed before)."""
    [(since,)] = _sql("SELECT clock_timestamp()")
    wait_until(
        lambda: _sql("SELECT 1 FROM alert_rules WHERE id = %s AND evaluated_at > %s", (rule_id, since)),
        timeout=30,
        interval=0.2,
        message="the rule was not evaluated",
    )


def test_quota_use_fires_at_its_share_of_the_quota_and_resolves_below_it(
    client: httpx.Client, worker: Any, receiver: Receiver
) -> None:
    # GIVEN a free-plan user (3 containers), a webhook, and a rule at 0.6 of their container quota
    user = sign_up_and_in(client)
    plan = client.get("/api/billing/plan", headers=user.auth_headers).json()
    assert (plan["plan"]["name"], plan["plan"]["quotas"]["max_containers"]) == ("free", 3)
    hook = client.post("/api/alerts/webhooks", json={"url": receiver.url, "secret": SECRET}, headers=user.auth_headers)
    assert hook.status_code == 201, hook.text
    created = client.post(
        "/api/alerts/rules",
        json={
            "kind": "quota_use",
            "quota": "max_containers",
            "threshold": 0.6,
            "for_seconds": 1,
            "resolve_after_seconds": 1,
        },
        headers=user.auth_headers,
    )
    assert created.status_code == 201, created.text
    rule = created.json()
    assert (rule["kind"], rule["quota"], rule["threshold"], rule["state"]) == ("quota_use", "max_containers", 0.6, "ok")
    assert (rule["container_id"], rule["service"], rule["listener_id"]) == (None, None, None)
    image_id = str(uuid.uuid4())
    _sql(
        "INSERT INTO images (id, owner_id, name, tag, object_key, status) VALUES (%s, %s, 'q', 'v1', 'k', 'ready')",
        (image_id, user.id),
    )

    def hold_a_container(name: str) -> str:
        # A stopped container on no host: it counts against the quota, and no worker acts on it.
        container_id = str(uuid.uuid4())
        _sql(
            "INSERT INTO containers (id, owner_id, image_id, name, cpu, memory_mb, status, desired_state) "
            "VALUES (%s, %s, %s, %s, 0.5, 256, 'stopped', 'stopped')",
            (container_id, user.id, image_id, name),
        )
        return container_id

    try:
        # WHEN they hold 1 of 3 (33%) THEN the rule stays ok, round after round
        first = hold_a_container("q-1")
        _wait_for_a_round_after_now(rule["id"])
        _wait_for_a_round_after_now(rule["id"])
        assert client.get(f"/api/alerts/rules/{rule['id']}", headers=user.auth_headers).json()["state"] == "ok"
        assert client.get("/api/alerts", headers=user.auth_headers).json()["items"] == []

        # WHEN they hold 2 of 3 (67%) THEN one signed firing notification arrives once it held for_seconds
        hold_a_container("q-2")
        wait_until(lambda: "firing" in receiver.states(), timeout=30, interval=0.2, message="no firing")
        headers, body = receiver.received[0]
        assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
        payload = json.loads(body)
        assert payload["alerts"][0]["labels"]["alertname"] == "quota_use"
        assert payload["alerts"][0]["labels"]["quota"] == "max_containers"
        assert payload["berth"]["kind"] == "quota_use" and payload["berth"]["threshold"] == 0.6
        assert "2 of 3 containers" in payload["berth"]["summary"], payload["berth"]["summary"]
        assert client.get(f"/api/alerts/rules/{rule['id']}", headers=user.auth_headers).json()["state"] == "firing"

        # WHEN one of them is deleted (1 of 3) THEN one resolved notification follows the hold-off, and no other
        _sql("UPDATE containers SET status = 'deleted', desired_state = 'deleted' WHERE id = %s", (first,))
        wait_until(lambda: "resolved" in receiver.states(), timeout=30, interval=0.2, message="no resolved")
        _wait_for_a_round_after_now(rule["id"])
        _wait_for_a_round_after_now(rule["id"])
        assert receiver.states() == ["firing", "resolved"]
        history = client.get("/api/alerts", params={"rule_id": rule["id"]}, headers=user.auth_headers).json()
        assert [(a["kind"], a["state"]) for a in history["items"]] == [("quota_use", "resolved")]
        assert "1 of 3 containers" in history["items"][0]["summary"]
    finally:
        _sql("DELETE FROM containers WHERE owner_id = %s", (user.id,))
        _sql("DELETE FROM users WHERE id = %s", (user.id,))


def test_bad_alert_input_is_a_clear_4xx(client: httpx.Client, owners: list[str]) -> None:  # noqa: F811
    user = _user(client, owners)
    headers = user.auth_headers
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/api/alerts/rules", {"kind": "disk_full", "service": "web"}, 422, "validation_failed"),
        (
            "/api/alerts/rules",
            {"kind": "container_restarts", "container_id": "0" * 32, "threshold": -1},
            422,
            "validation_failed",
        ),
        ("/api/alerts/rules", {"kind": "container_restarts", "container_id": "0" * 32}, 422, "validation_failed"),
        (
            "/api/alerts/rules",
            {"kind": "listener_error_rate", "listener_id": "0" * 32, "threshold": 2},
            422,
            "validation_failed",
        ),
        ("/api/alerts/rules", {"kind": "container_unhealthy", "service": "web"}, 422, "validation_failed"),
        ("/api/alerts/rules", {"kind": "container_unhealthy", "container_id": "0" * 32}, 404, "not_found"),
        ("/api/alerts/rules", {"kind": "quota_use", "quota": "max_cpus", "threshold": 0.5}, 422, "validation_failed"),
        (
            "/api/alerts/rules",
            {"kind": "quota_use", "quota": "max_containers", "threshold": 0},
            422,
            "validation_failed",
        ),
        (
            "/api/alerts/rules",
            {"kind": "quota_use", "quota": "max_containers", "threshold": 1.01},
            422,
            "validation_failed",
        ),
        ("/api/alerts/rules", {"kind": "quota_use", "quota": "max_containers"}, 422, "validation_failed"),
        ("/api/alerts/rules", {"kind": "quota_use", "service": "web", "threshold": 0.5}, 422, "validation_failed"),
        ("/api/alerts/webhooks", {"url": "ftp://example.com/x", "secret": SECRET}, 422, "validation_failed"),
        ("/api/alerts/webhooks", {"url": "https://example.com/x", "secret": "short"}, 422, "validation_failed"),
    ]
    for path, body, status, code in cases:
        answer = client.post(path, json=body, headers=headers)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["code"] == code, (body, answer.text)
        assert answer.json()["error"]["message"]
    history = client.get("/api/alerts", params={"state": "burning"}, headers=headers)
    assert history.status_code == 422 and history.json()["error"]["code"] == "validation_failed"


def test_private_webhook_urls_are_refused_without_the_operator_setting(tmp_path: Path, backing_services: None) -> None:
    # GIVEN a gateway whose functions do not allow private webhook targets (the production default)
    gateway = start_gateway(tmp_path, {"BERTH_ALERTS_ALLOW_PRIVATE_WEBHOOKS": "false"})
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            user = sign_up_and_in(http)
            for url in (
                "http://127.0.0.1:9/hook",
                "http://localhost/hook",
                "http://169.254.169.254/latest",
                "http://10.1.2.3/",
            ):
                # WHEN a webhook to a loopback, link-local or private address is added
                answer = http.post(
                    "/api/alerts/webhooks", json={"url": url, "secret": SECRET}, headers=user.auth_headers
                )
                # THEN it is refused with a clear 422
                assert answer.status_code == 422, (url, answer.text)
                error = answer.json()["error"]
                assert error["code"] == "webhook_url_refused", error
                assert "address" in error["message"]
            assert http.get("/api/alerts/webhooks", headers=user.auth_headers).json()["items"] == []
    finally:
        stop_process(gateway.process)
