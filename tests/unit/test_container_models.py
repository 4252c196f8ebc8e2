"""The container request's validation: names, ports, limits, restart policies, secret environment, health
checks, and the logs route's ``since``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from functions.containers.models import CreateContainer, parse_since

GOOD: dict[str, Any] = {"image_id": "i", "name": "web-1", "ports": [{"container_port": 8080}]}


@pytest.mark.parametrize("policy", ["no", "always", "on-failure", "on-failure:3", "on-failure:999"])
def test_restart_policies_accepted(policy: str) -> None:
    assert CreateContainer.model_validate({**GOOD, "restart_policy": policy}).restart_policy == policy


def test_defaults() -> None:
    body = CreateContainer.model_validate(GOOD)
    assert (body.cpu, body.memory_mb, body.restart_policy, body.ports[0].protocol) == (0.5, 256, "no", "tcp")
    assert CreateContainer.model_validate({**GOOD, "cpu": 1}).cpu == 1.0


@pytest.mark.parametrize(
    "change",
    [
        {"restart_policy": "sometimes"},
        {"restart_policy": "on-failure:0"},
        {"name": "Web"},
        {"name": "-web"},
        {"name": "web-"},
        {"name": "a" * 64},
        {"cpu": 0.05},
        {"cpu": 2.5},
        {"memory_mb": 15},
        {"ports": [{"container_port": 0}]},
        {"ports": [{"container_port": 65536}]},
        {"ports": [{"container_port": 80, "protocol": "sctp"}]},
        {"ports": [{"container_port": 80}, {"container_port": 80, "protocol": "udp"}]},
        {"ports": [{"container_port": p} for p in range(1, 7)]},
        {"env": {"1BAD": "x"}},
        {"command": []},
        {"privileged": True},
    ],
)
def test_bad_input_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CreateContainer.model_validate({**GOOD, **change})


def test_secret_env_is_validated_like_env_and_kept_out_of_repr() -> None:
    body = CreateContainer.model_validate({**GOOD, "env": {"MODE": "prod"}, "secret_env": {"API_TOKEN": "s3cr3t"}})
    assert body.secret_env == {"API_TOKEN": "s3cr3t"}
    assert "s3cr3t" not in repr(body)
    assert CreateContainer.model_validate(GOOD).secret_env == {}


@pytest.mark.parametrize(
    "secret_env",
    [
        {"1BAD": "x"},
        {"HAS SPACE": "x"},
        {"A" * 129: "x"},
        {"TOKEN": "x" * 4097},
        {"TOKEN": 1},
        {f"V{i}": "x" for i in range(101)},
    ],
)
def test_bad_secret_env_is_refused(secret_env: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CreateContainer.model_validate({**GOOD, "secret_env": secret_env})


def test_a_name_in_both_env_and_secret_env_is_refused_without_echoing_the_value() -> None:
    with pytest.raises(ValidationError) as refused:
        CreateContainer.model_validate({**GOOD, "env": {"TOKEN": "a"}, "secret_env": {"TOKEN": "hunter2-value"}})
    [error] = refused.value.errors()
    assert "TOKEN" in error["msg"]
    assert "hunter2-value" not in error["msg"]


def test_secret_env_errors_name_the_variable_not_the_value() -> None:
    with pytest.raises(ValidationError) as refused:
        CreateContainer.model_validate({**GOOD, "secret_env": {"BIG": "sensitive" * 500}})
    [error] = refused.value.errors()
    assert "BIG" in error["msg"] and "sensitive" not in error["msg"]


@pytest.mark.parametrize(
    ("check", "ports", "stored"),
    [
        (
            {"type": "http"},
            [{"container_port": 8080}, {"container_port": 9090}],
            {
                "type": "http",
                "port": 8080,
                "path": "/",
                "interval_seconds": 10,
                "timeout_seconds": 2,
                "retries": 3,
                "start_period_seconds": 0,
            },
        ),
        (
            {
                "type": "tcp",
                "port": 5432,
                "interval_seconds": 30,
                "timeout_seconds": 30,
                "retries": 10,
                "start_period_seconds": 600,
            },
            [],
            {
                "type": "tcp",
                "port": 5432,
                "path": None,
                "interval_seconds": 30,
                "timeout_seconds": 30,
                "retries": 10,
                "start_period_seconds": 600,
            },
        ),
        (
            {"type": "http", "path": "/healthz?full=1", "port": 9090, "interval_seconds": 1},
            [{"container_port": 8080}],
            {
                "type": "http",
                "port": 9090,
                "path": "/healthz?full=1",
                "interval_seconds": 1,
                "timeout_seconds": 1,
                "retries": 3,
                "start_period_seconds": 0,
            },
        ),
    ],
)
def test_health_check_defaults_are_filled_in(
    check: dict[str, Any], ports: list[dict[str, Any]], stored: dict[str, Any]
) -> None:
    body = CreateContainer.model_validate({**GOOD, "ports": ports, "health_check": check})
    normalised = body.normalised_health_check()
    assert normalised is not None and normalised.model_dump() == stored


def test_no_health_check_is_none() -> None:
    assert CreateContainer.model_validate(GOOD).normalised_health_check() is None


@pytest.mark.parametrize(
    ("check", "ports"),
    [
        ({"type": "http"}, []),  # no port and none published
        ({"type": "grpc", "port": 80}, None),
        ({"port": 80}, None),
        ({"type": "tcp", "port": 80, "path": "/"}, None),
        ({"type": "http", "port": 0}, None),
        ({"type": "http", "port": 65536}, None),
        ({"type": "http", "port": "80"}, None),
        ({"type": "http", "path": "health"}, None),
        ({"type": "http", "path": "/a b"}, None),
        ({"type": "http", "path": "/a\nb"}, None),
        ({"type": "http", "path": "/a\x00"}, None),
        ({"type": "http", "path": "/" + "a" * 1024}, None),
        ({"type": "http", "interval_seconds": 0}, None),
        ({"type": "http", "interval_seconds": 301}, None),
        ({"type": "http", "timeout_seconds": 0}, None),
        ({"type": "http", "timeout_seconds": 61, "interval_seconds": 300}, None),
        ({"type": "http", "timeout_seconds": 11, "interval_seconds": 10}, None),
        ({"type": "http", "retries": 0}, None),
        ({"type": "http", "retries": 11}, None),
        ({"type": "http", "start_period_seconds": -1}, None),
        ({"type": "http", "start_period_seconds": 601}, None),
        ({"type": "http", "command": "curl"}, None),
    ],
)
def test_bad_health_checks_are_refused(check: dict[str, Any], ports: list[dict[str, Any]] | None) -> None:
    body = {**GOOD, "health_check": check}
    if ports is not None:
        body["ports"] = ports
    with pytest.raises(ValidationError):
        CreateContainer.model_validate(body)


def test_health_check_bounds_are_accepted() -> None:
    check = {
        "type": "http",
        "path": "/" + "a" * 1023,
        "interval_seconds": 300,
        "timeout_seconds": 60,
        "retries": 10,
        "start_period_seconds": 600,
        "port": 65535,
    }
    normalised = CreateContainer.model_validate({**GOOD, "health_check": check}).normalised_health_check()
    assert normalised is not None and normalised.model_dump() == check


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250000Z", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("1714564800", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("1714564800.5", datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_since_accepts_rfc3339_and_unix_seconds(value: str, expected: datetime) -> None:
    assert parse_since(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "yesterday", "2024-05-01", "2024-05-01T12:00:00", "-5", "1e9", "0x10", "2024-13-01T00:00:00Z", "999999999999"],
)
def test_bad_since_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_since(value)
