"""The container request's validation: names, ports, limits and restart policies."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from functions.containers.models import CreateContainer

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
