"""The functions' own rate limits: the same policies as the gateway's, from the same document, and the
count-once mark trusted only in the request context (which only a gateway writes)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from gateway.events import build_event
from gateway.server import load_effective_spec
from gateway.settings import GatewaySettings
from shared.config import FunctionSettings
from shared.rate_limit import GATEWAY_COUNTED_KEY
from shared.throttling import counted_by_gateway, policy_for, route_shape


def _settings(**overrides: Any) -> FunctionSettings:
    base = {"rate_limit_per_ip": None, "rate_limit_per_user": None, "rate_limit_window_seconds": None}
    return FunctionSettings(**{**base, **overrides})


def test_every_operation_has_the_gateways_limits_and_bucket_scopes() -> None:
    gateway_settings = GatewaySettings(
        gateway_rate_limit_per_ip=None, gateway_rate_limit_per_user=None, gateway_rate_limit_window_seconds=None
    )
    spec = load_effective_spec(gateway_settings)
    settings = _settings()
    for operation in spec.operations:
        if operation.method == "ANY":
            continue
        policy = policy_for(settings, operation.method, operation.path)
        for ours, theirs in (
            (policy.per_ip, operation.throttling.per_ip),
            (policy.per_user, operation.throttling.per_user),
        ):
            if theirs is None:
                assert ours is None, operation.route_key
            else:
                assert ours is not None, operation.route_key
                assert (ours.limit, ours.window_seconds, ours.scope) == (
                    theirs.limit,
                    theirs.window_seconds,
                    theirs.scope,
                )


def test_overrides_apply_to_every_route_and_parameter_names_do_not_matter() -> None:
    settings = _settings(rate_limit_per_ip=7, rate_limit_per_user=3)

    policy = policy_for(settings, "GET", "/api/containers/{some_other_name}")

    assert route_shape("/api/containers/{container_id}") == route_shape("/api/containers/{id}")
    assert policy.per_ip is not None and policy.per_ip.limit == 7
    assert policy.per_user is not None and policy.per_user.limit == 3
    assert policy_for(settings, "POST", "/api/auth/signup").per_user is None


def _request(event: dict[str, Any] | None, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": headers or []}
    if event is not None:
        scope["aws.event"] = event
    return Request(scope)


@pytest.mark.parametrize("counted", [True, False])
def test_only_the_gateways_request_context_mark_counts(counted: bool) -> None:
    event = build_event(
        method="GET",
        raw_path="/api/auth/me",
        raw_query="",
        headers={"x-berth-rate-limits-counted": "true", GATEWAY_COUNTED_KEY: "true"},
        cookies=[],
        body=b"",
        route_key="GET /api/auth/me",
        path_parameters={},
        source_ip="203.0.113.9",
        request_id="r",
        rate_limits_counted=counted,
    )

    assert counted_by_gateway(_request(event)) is counted
    assert counted_by_gateway(_request(None, [(GATEWAY_COUNTED_KEY.lower().encode(), b"true")])) is False
