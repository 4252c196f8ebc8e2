"""The containers function in-process (ASGI) against the real PostgreSQL, Redis and moto of the test run, with
real access tokens from the auth function: secret environment sealed at rest and never answered, health checks
stored normalised, restart bookkeeping answered, the event history paged, and logs read from container_logs
whatever the container's status, tenant-scoped."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from functions.containers.app import app as containers_app
from shared.config import AuthSettings, get_function_settings
from shared.jobs import ensure_host_queue
from shared.secrets import open_env, seal_env
from tests.support.function_apps import client_of, verified_by_auth

SECRET_VALUE = "pa55-" + secrets.token_hex(8)  # unique: found nowhere unless leaked


@dataclass
class User:
    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _sql(query: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(get_function_settings().database_url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    """The containers app, verifying tokens against the auth app's published keys (as a gateway would)."""
    async with verified_by_auth(containers_app) as auth, client_of(containers_app) as client:
        client.auth_client = auth  # type: ignore[attr-defined]
        yield client


@pytest.fixture
async def world(api: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    """Two signed-in users, a ready image of the first, and a live host with its job queue; all removed after."""
    auth: httpx.AsyncClient = api.auth_client  # type: ignore[attr-defined]
    users: list[User] = []
    for _ in range(2):
        email = f"containers-{secrets.token_hex(6)}@example.com"
        password = "correct horse " + secrets.token_hex(4)
        created = await auth.post("/api/auth/signup", json={"email": email, "password": password})
        assert created.status_code == 201, created.text
        signed_in = await auth.post("/api/auth/signin", json={"email": email, "password": password})
        assert signed_in.status_code == 200, signed_in.text
        users.append(User(created.json()["id"], signed_in.json()["access_token"]))
    host_id = f"test-host-{secrets.token_hex(6)}"
    image_id = str(uuid.uuid4())
    _sql(
        "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 64, 65536)",
        (host_id,),
    )
    _sql(
        "INSERT INTO images (id, owner_id, name, tag, object_key, status) VALUES (%s, %s, 'web', 'v1', 'k', 'ready')",
        (image_id, users[0].id),
    )
    # Container jobs may go to the host's own queue; the host's worker would have created it.
    ensure_host_queue(get_function_settings(), host_id)
    yield {"owner": users[0], "stranger": users[1], "image_id": image_id, "host_id": host_id}
    _sql("DELETE FROM users WHERE id = ANY(%s)", ([user.id for user in users],))
    _sql("DELETE FROM hosts WHERE id = %s", (host_id,))


def _record(world: dict[str, Any], status: str = "running", desired: str = "running") -> str:
    """A container row of the owner, written as the host worker would leave it (no job involved)."""
    container_id = str(uuid.uuid4())
    _sql(
        "INSERT INTO containers (id, owner_id, image_id, name, cpu, memory_mb, host_id, docker_id, status, "
        "desired_state) VALUES (%s, %s, %s, %s, 0.5, 256, %s, %s, %s, %s)",
        (
            container_id,
            world["owner"].id,
            world["image_id"],
            f"c-{secrets.token_hex(4)}",
            world["host_id"],
            f"d-{secrets.token_hex(4)}",
            status,
            desired,
        ),
    )
    return container_id


def _log(container_id: str, ts: datetime, text: str, stream: str = "stdout") -> None:
    _sql(
        "INSERT INTO container_logs (container_id, ts, stream, text) VALUES (%s, %s, %s, %s)",
        (container_id, ts, stream, text),
    )


async def _create(api: httpx.AsyncClient, world: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    _sql("UPDATE hosts SET heartbeat_at = now() WHERE id = %s", (world["host_id"],))
    return await api.post(
        "/api/containers", json={"image_id": world["image_id"], **body}, headers=world["owner"].headers
    )


def _assert_not_logged(caplog: pytest.LogCaptureFixture, value: str) -> None:
    assert caplog.records, "the test logs at DEBUG: something must have logged"
    for record in caplog.records:
        assert value not in repr(vars(record)), record.name


async def test_secret_env_is_sealed_and_only_its_names_are_answered(
    api: httpx.AsyncClient, world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    owner = world["owner"]
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="containers")
    # GIVEN a container created with a plain and a secret environment
    created = await _create(
        api,
        world,
        {
            "name": "with-secrets",
            "env": {"MODE": "prod"},
            "secret_env": {"DB_PASSWORD": SECRET_VALUE, "API_TOKEN": SECRET_VALUE + "-2"},
            "ports": [{"container_port": 8080}],
        },
    )

    # THEN the answer names the secret variables, sorted, and holds no value
    assert created.status_code == 202, created.text
    container = created.json()
    assert container["secret_env_names"] == ["API_TOKEN", "DB_PASSWORD"]
    assert container["env_names"] == ["MODE"]
    assert "secret_env" not in container
    assert (container["restart_count"], container["exit_code"], container["health_check"]) == (0, None, None)

    # AND no route answers the value: get, list, stop, events
    answers = [
        created,
        await api.get(f"/api/containers/{container['id']}", headers=owner.headers),
        await api.get("/api/containers", headers=owner.headers),
        await api.post(f"/api/containers/{container['id']}/stop", headers=owner.headers),
        await api.get(f"/api/containers/{container['id']}/events", headers=owner.headers),
    ]
    for answer in answers:
        assert answer.status_code in (200, 202), answer.text
        assert SECRET_VALUE not in answer.text
    assert answers[1].json()["secret_env_names"] == ["API_TOKEN", "DB_PASSWORD"]
    assert answers[2].json()["items"][0]["secret_env_names"] == ["API_TOKEN", "DB_PASSWORD"]

    # AND PostgreSQL holds a sealed token, not the plaintext, that opens to exactly the secret environment
    [(stored, env)] = _sql("SELECT secret_env, env FROM containers WHERE id = %s", (container["id"],))
    assert stored and SECRET_VALUE not in stored
    assert env == {"MODE": "prod"}
    assert open_env(get_function_settings(), stored) == {"DB_PASSWORD": SECRET_VALUE, "API_TOKEN": SECRET_VALUE + "-2"}

    # AND nothing the function logged carries it
    _assert_not_logged(caplog, SECRET_VALUE)


async def test_reads_answer_the_stored_names_without_opening_the_sealed_values(
    api: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    # GIVEN a container whose secret environment was sealed before BERTH_SECRET_KEY changed
    container_id = _record(world)
    other_key = AuthSettings(secret_key=SecretStr("another deployment's key " + secrets.token_hex(8)))
    _sql(
        "UPDATE containers SET secret_env = %s, secret_env_names = %s WHERE id = %s",
        (seal_env(other_key, {"OLD": "x"}), ["OLD"], container_id),
    )

    # THEN get and list answer its names all the same: reads never open the values
    got = await api.get(f"/api/containers/{container_id}", headers=world["owner"].headers)
    assert got.status_code == 200, got.text
    assert got.json()["secret_env_names"] == ["OLD"]
    listed = await api.get("/api/containers", headers=world["owner"].headers)
    assert listed.status_code == 200 and listed.json()["items"][0]["secret_env_names"] == ["OLD"]


async def test_no_secret_env_stores_null(api: httpx.AsyncClient, world: dict[str, Any]) -> None:
    created = await _create(api, world, {"name": "plain"})
    assert created.status_code == 202, created.text
    assert created.json()["secret_env_names"] == []
    assert _sql("SELECT secret_env FROM containers WHERE id = %s", (created.json()["id"],)) == [(None,)]


async def test_bad_secret_env_is_a_422_that_does_not_echo_the_value(
    api: httpx.AsyncClient, world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="containers")
    cases = [
        {"env": {"TOKEN": "a"}, "secret_env": {"TOKEN": SECRET_VALUE}},
        {"secret_env": {"1TOKEN": SECRET_VALUE}},
        {"secret_env": {"TOKEN": SECRET_VALUE * 300}},
        {"secret_env": {"TOKEN": 12345}},
    ]
    for case in cases:
        answer = await _create(api, world, {"name": "bad-secret", **case})
        assert answer.status_code == 422, (case, answer.text)
        assert answer.json()["error"]["code"] == "validation_failed"
        assert SECRET_VALUE not in answer.text
    assert _sql("SELECT count(*) FROM containers WHERE owner_id = %s", (world["owner"].id,)) == [(0,)]
    _assert_not_logged(caplog, SECRET_VALUE)


async def test_health_check_is_stored_normalised_and_answered(api: httpx.AsyncClient, world: dict[str, Any]) -> None:
    created = await _create(
        api,
        world,
        {
            "name": "checked",
            "ports": [{"container_port": 8080}, {"container_port": 9090}],
            "health_check": {"type": "http", "path": "/healthz", "retries": 5},
        },
    )
    assert created.status_code == 202, created.text
    expected = {
        "type": "http",
        "port": 8080,
        "path": "/healthz",
        "interval_seconds": 10,
        "timeout_seconds": 2,
        "retries": 5,
        "start_period_seconds": 0,
    }
    assert created.json()["health_check"] == expected
    assert _sql("SELECT health_check FROM containers WHERE id = %s", (created.json()["id"],)) == [(expected,)]
    got = await api.get(f"/api/containers/{created.json()['id']}", headers=world["owner"].headers)
    assert got.json()["health_check"] == expected

    refused = await _create(api, world, {"name": "unchecked", "health_check": {"type": "tcp"}})
    assert refused.status_code == 422, refused.text
    assert "port" in refused.json()["error"]["message"]


async def test_restart_count_and_exit_code_are_answered(api: httpx.AsyncClient, world: dict[str, Any]) -> None:
    container_id = _record(world, status="failed")
    _sql("UPDATE containers SET restart_count = 3, exit_code = 137 WHERE id = %s", (container_id,))
    answer = await api.get(f"/api/containers/{container_id}", headers=world["owner"].headers)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["restart_count"], answer.json()["exit_code"]) == (3, 137)


async def test_events_are_the_history_newest_first_in_pages(api: httpx.AsyncClient, world: dict[str, Any]) -> None:
    owner, stranger = world["owner"], world["stranger"]
    # GIVEN a container that went pending -> creating -> running -> (stop asked) -> stopped, with a reason
    container_id = _record(world, status="pending")
    _sql("UPDATE containers SET status = 'creating' WHERE id = %s", (container_id,))
    _sql("UPDATE containers SET status = 'running' WHERE id = %s", (container_id,))
    _sql("UPDATE containers SET cpu = 1 WHERE id = %s", (container_id,))  # not an event
    stop = await api.post(f"/api/containers/{container_id}/stop", headers=owner.headers)
    assert stop.status_code == 202, stop.text
    _sql("UPDATE containers SET status = 'stopped', reason = 'stopped by you' WHERE id = %s", (container_id,))
    expected = [
        ("stopped", "stopped", "stopped by you"),
        ("running", "stopped", None),
        ("running", "running", None),
        ("creating", "running", None),
        ("pending", "running", None),
    ]

    # WHEN the owner reads the events, whole and two at a time
    whole = await api.get(f"/api/containers/{container_id}/events", headers=owner.headers)
    assert whole.status_code == 200, whole.text
    items = whole.json()["items"]
    assert [(e["status"], e["desired_state"], e["reason"]) for e in items] == expected
    assert whole.json()["next_cursor"] is None
    assert [e["ts"] for e in items] == sorted((e["ts"] for e in items), reverse=True)

    paged: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await api.get(f"/api/containers/{container_id}/events", params=params, headers=owner.headers)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 2
        paged.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert paged == items

    # THEN another tenant, an unknown id and bad parameters get clear answers
    for path in (f"/api/containers/{container_id}/events", f"/api/containers/{uuid.uuid4()}/events"):
        refused = await api.get(path, headers=stranger.headers)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    base = f"/api/containers/{container_id}/events"
    for query, status in (("limit=0", 422), ("limit=201", 422), ("limit=x", 422), ("cursor=zzz", 400)):
        answer = await api.get(f"{base}?{query}", headers=owner.headers)
        assert answer.status_code == status, (query, answer.text)
        assert answer.json()["error"]["message"]
    assert (await api.get(f"{base}?limit=200", headers=owner.headers)).status_code == 200
    # a cursor of the list route is not an events cursor
    _record(world)
    list_cursor = (await api.get("/api/containers?limit=1", headers=owner.headers)).json()["next_cursor"]
    assert list_cursor
    assert (await api.get(f"{base}?cursor={list_cursor}", headers=owner.headers)).status_code == 400


async def test_logs_come_from_the_shipped_lines(api: httpx.AsyncClient, world: dict[str, Any]) -> None:
    owner = world["owner"]
    container_id = _record(world)
    path = f"/api/containers/{container_id}/logs"

    # GIVEN no line shipped yet THEN the logs are empty
    empty = await api.get(path, headers=owner.headers)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"lines": []}

    # GIVEN 150 lines shipped out of order, stdout and stderr, another container's lines alongside
    start = datetime(2030, 1, 1, 12, tzinfo=UTC)
    for i in reversed(range(150)):
        _log(container_id, start + timedelta(seconds=i), f"line {i}", "stderr" if i % 10 == 0 else "stdout")
    other = _record(world)
    _log(other, start + timedelta(seconds=500), "not mine")

    # THEN by default the newest 100 come back, oldest first
    default = (await api.get(path, headers=owner.headers)).json()["lines"]
    assert [line["text"] for line in default] == [f"line {i}" for i in range(50, 150)]
    assert default[0]["stream"] == "stderr" and default[1]["stream"] == "stdout"
    assert datetime.fromisoformat(default[0]["ts"]) == start + timedelta(seconds=50)

    # AND tail, since (RFC 3339 or unix seconds, inclusive) and both together narrow them
    async def texts(params: dict[str, Any]) -> list[str]:
        answer = await api.get(path, params=params, headers=owner.headers)
        assert answer.status_code == 200, answer.text
        return [line["text"] for line in answer.json()["lines"]]

    assert await texts({"tail": 3}) == ["line 147", "line 148", "line 149"]
    assert await texts({"tail": 5000}) == [f"line {i}" for i in range(150)]
    since = start + timedelta(seconds=145)
    assert await texts({"since": since.isoformat()}) == [f"line {i}" for i in range(145, 150)]
    assert await texts({"since": since.isoformat().replace("+00:00", "Z")}) == [f"line {i}" for i in range(145, 150)]
    assert await texts({"since": str(int(since.timestamp()))}) == [f"line {i}" for i in range(145, 150)]
    assert await texts({"since": str(since.timestamp() - 0.5)}) == [f"line {i}" for i in range(145, 150)]
    assert await texts({"since": (start + timedelta(seconds=140)).isoformat(), "tail": 2}) == ["line 148", "line 149"]
    assert await texts({"since": (start + timedelta(days=1)).isoformat()}) == []

    # AND bad parameters are a 4xx JSON error
    for query in ("tail=0", "tail=5001", "tail=x", "since=yesterday", "since=2030-01-01", "since=2030-01-01T00:00:00"):
        answer = await api.get(f"{path}?{query}", headers=owner.headers)
        assert answer.status_code == 422, (query, answer.text)
        assert answer.json()["error"]["code"] == "validation_failed" and answer.json()["error"]["message"]

    # AND another tenant gets 404, for the logs and for an unknown container
    for target in (container_id, str(uuid.uuid4()), "not-a-uuid"):
        refused = await api.get(f"/api/containers/{target}/logs", headers=world["stranger"].headers)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("status", "desired"),
    [
        ("pending", "running"),
        ("stopped", "stopped"),
        ("failed", "running"),
        ("lost", "running"),
        ("deleted", "deleted"),
    ],
)
async def test_logs_outlive_the_container(
    api: httpx.AsyncClient, world: dict[str, Any], status: str, desired: str
) -> None:
    container_id = _record(world, status=status, desired=desired)
    ts = datetime.now(UTC) - timedelta(minutes=1)
    _log(container_id, ts, "last words", "stderr")
    answer = await api.get(f"/api/containers/{container_id}/logs", headers=world["owner"].headers)
    assert answer.status_code == 200, answer.text
    [line] = answer.json()["lines"]
    assert (line["text"], line["stream"], datetime.fromisoformat(line["ts"])) == ("last words", "stderr", ts)


async def test_fifty_concurrent_creates_get_fifty_distinct_ports(api: httpx.AsyncClient, world: dict[str, Any]) -> None:
    # GIVEN the owner's ready image and one live host: the test's own (another test's worker may run a host
    # in this database; it drains meanwhile, so no real container is started for these records)
    _sql("UPDATE hosts SET heartbeat_at = now() WHERE id = %s", (world["host_id"],))
    others = [
        row[0]
        for row in _sql(
            "UPDATE hosts SET status = 'draining' WHERE status = 'up' AND id <> %s RETURNING id", (world["host_id"],)
        )
    ]
    settings = get_function_settings()
    # A plan that holds 50 containers (the free plan's quota allows 3).
    _sql("UPDATE users SET plan = 'team' WHERE id = %s", (world["owner"].id,))

    # WHEN 50 creates, each publishing one port, arrive at once
    async def create(index: int) -> httpx.Response:
        body = {"image_id": world["image_id"], "name": f"burst-{index}", "ports": [{"container_port": 8080}]}
        return await api.post("/api/containers", json=body, headers=world["owner"].headers)

    try:
        answers = await asyncio.gather(*(create(index) for index in range(50)))
    finally:
        if others:
            _sql("UPDATE hosts SET status = 'up' WHERE id = ANY(%s)", (others,))

    # THEN every one is accepted with a port of the range, and no host gives one port twice
    assert [answer.status_code for answer in answers] == [202] * 50, [a.text for a in answers if a.status_code != 202]
    placed = [(answer.json()["host_id"], answer.json()["ports"][0]["host_port"]) for answer in answers]
    assert len(set(placed)) == 50
    assert all(port in settings.host_port_range for _, port in placed)
    allocated = _sql(
        "SELECT host_id, port FROM port_allocations WHERE owner_id = ANY(%s::uuid[])",
        ([answer.json()["id"] for answer in answers],),
    )
    assert sorted(allocated) == sorted(placed)


async def test_a_create_whose_job_cannot_be_queued_leaves_nothing_behind(
    api: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    # GIVEN the only live host has no job queue (its worker never made one, or it went with the host)
    _sql("UPDATE hosts SET heartbeat_at = now() - interval '1 hour' WHERE id = %s", (world["host_id"],))
    lonely = f"test-host-{secrets.token_hex(6)}"
    _sql(
        "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb, heartbeat_at) "
        "VALUES (%s, '127.0.0.1', 64, 65536, now())",
        (lonely,),
    )
    body = {"image_id": world["image_id"], "name": "queued", "ports": [{"container_port": 8080}]}
    try:
        # WHEN the owner creates a container
        refused = await api.post("/api/containers", json=body, headers=world["owner"].headers)
        # THEN the answer says try again, and neither the record nor its host port is left behind
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "dependency_unavailable"
        assert _sql("SELECT count(*) FROM containers WHERE host_id = %s", (lonely,)) == [(0,)]
        assert _sql("SELECT count(*) FROM port_allocations WHERE host_id = %s", (lonely,)) == [(0,)]
        # WHEN the host's queue exists again and the owner tries again
        ensure_host_queue(get_function_settings(), lonely)
        retried = await api.post("/api/containers", json=body, headers=world["owner"].headers)
        # THEN the name is free: the container is placed there
        assert retried.status_code == 202, retried.text
        assert _sql("SELECT name FROM containers WHERE host_id = %s", (lonely,)) == [("queued",)]
    finally:
        _sql("DELETE FROM containers WHERE host_id = %s", (lonely,))
        _sql("DELETE FROM port_allocations WHERE host_id = %s", (lonely,))
        _sql("DELETE FROM hosts WHERE id = %s", (lonely,))
