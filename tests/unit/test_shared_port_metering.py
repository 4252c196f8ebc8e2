"""Billing of shared-port traffic and of container egress, the pure parts: host route ids name their
listener (shared.host_routes) the way the control plane builds them, a reading's deltas fold into the owning
listener (shared.traffic_history.fold_routes), and container egress is what it transmitted less its answers
to lb-runtime, never below zero (worker.metering.container_egress)."""

from __future__ import annotations

import pytest

from shared.host_routes import owning_listener, redirect_route_id, route_id
from shared.traffic_history import Figures, Reading, fold_routes
from worker.metering import container_egress

LISTENER = "6f1c2f4e-8d0a-4b7e-9a51-3c2b1d0e9f87"


def test_the_control_plane_names_each_route_after_the_listener_owning_its_host() -> None:
    # GIVEN the control plane's shared ports built from an http and an https listener, each with a name
    from lb_runtime.control_plane import ControlPlaneSource

    other = "0b8e5a52-1c1d-4f6e-8f1e-2a9d3c4b5e6f"
    base = {"algorithm": "round_robin", "health_check": None, "instances": []}
    listeners = [
        base | {"id": LISTENER, "port": 20001, "protocol": "http"},
        base | {"id": other, "port": 20002, "protocol": "https", "certificates": []},
    ]
    names = [{"hostname": "blog.example", "listener_id": LISTENER}, {"hostname": "shop.example", "listener_id": other}]
    source = ControlPlaneSource("postgresql://unused", registry=None, shared_ports=(20080, 20443))  # type: ignore[arg-type]

    # WHEN the shared listeners are built
    routes = [route for shared in source._shared_listeners(listeners, names) for route in shared["routes"]]

    # THEN every route's id (the https one's redirect on http too) names the listener owning its host
    assert sorted(route["id"] for route in routes) == sorted(
        [route_id(LISTENER, "blog.example"), route_id(other, "shop.example"), redirect_route_id(other, "shop.example")]
    )
    assert {route["host"]: owning_listener(route["id"]) for route in routes} == {
        "blog.example": LISTENER,
        "shop.example": other,
    }


@pytest.mark.parametrize(
    ("reported", "owner"),
    [
        (LISTENER, LISTENER),
        (f"{LISTENER}:www.example.com", LISTENER),
        (f"{LISTENER}:www.example.com:redirect", LISTENER),
        ("shared-http", "shared-http"),  # a shared port's front belongs to no listener (no row matches it)
    ],
)
def test_the_owner_of_a_reported_id(reported: str, owner: str) -> None:
    assert owning_listener(reported) == owner


def test_route_deltas_fold_into_their_listener_with_its_own() -> None:
    # GIVEN one interval's deltas: the listener's own port, two host routes of it, a redirect, a shared front
    buckets = [1] + [0] * 12
    changes: Reading = {
        (LISTENER, ""): Figures(requests=3, responses_4xx=1, latency_buckets=buckets, latency_sum=0.5,
                                open_connections=2, bytes_in=100, bytes_out=1_000),
        (LISTENER, "c-1"): Figures(requests=3, latency_buckets=buckets, bytes_in=110, bytes_out=900),
        (f"{LISTENER}:a.example", ""): Figures(requests=5, responses_5xx=2, latency_buckets=buckets,
                                               latency_sum=0.25, open_connections=1, bytes_in=50, bytes_out=7_000),
        (f"{LISTENER}:a.example", "c-1"): Figures(requests=5, latency_buckets=buckets, bytes_in=60, bytes_out=6_500),
        (f"{LISTENER}:b.example", "c-2"): Figures(requests=1, latency_buckets=buckets, bytes_in=10, bytes_out=20),
        (f"{LISTENER}:b.example:redirect", ""): Figures(bytes_in=40, bytes_out=300),
        ("shared-http", ""): Figures(bytes_in=9, bytes_out=99),
    }  # fmt: skip

    # WHEN they are folded
    folded = fold_routes(changes)

    # THEN the listener's rows hold everything its own port and its names carried, per instance too
    assert set(folded) == {(LISTENER, ""), (LISTENER, "c-1"), (LISTENER, "c-2"), ("shared-http", "")}
    total = folded[LISTENER, ""]
    assert (total.requests, total.responses_4xx, total.responses_5xx, total.open_connections) == (8, 1, 2, 3)
    assert (total.bytes_in, total.bytes_out, total.latency_sum) == (190, 8_300, 0.75)
    assert total.latency_buckets == [2] + [0] * 12
    assert (folded[LISTENER, "c-1"].requests, folded[LISTENER, "c-1"].bytes_out) == (8, 7_400)
    assert (folded[LISTENER, "c-2"].requests, folded[LISTENER, "c-2"].bytes_out) == (1, 20)
    # and the deltas it was given are left as they were
    assert changes[LISTENER, ""].requests == 3


@pytest.mark.parametrize(
    ("transmitted", "proxied", "billed"),
    [
        (10_000, 0, 10_000),  # nothing through lb-runtime: all of it
        (10_000, 9_500, 500),  # answers to lb-runtime are the listener's: the rest (headers, other traffic)
        (9_000, 9_500, 0),  # answers observed before the transmit counter showed them: never below zero
    ],
)
def test_container_egress_leaves_out_answers_to_lb_runtime(transmitted: int, proxied: int, billed: int) -> None:
    assert container_egress(transmitted, proxied) == billed
