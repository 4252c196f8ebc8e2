"""Pure logic of issue 15: webhook signatures and URL checks, traffic deltas and percentiles, the alert
state machine, and the history window of the stats route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from functions.load_balancer.service import _series, history_window
from shared.errors import ValidationFailed
from shared.traffic_history import (
    BUCKET_COUNT,
    LATENCY_BOUNDS,
    Figures,
    delta,
    parse_lb_metrics,
    quantile_ms,
    rebin,
)
from shared.webhooks import WebhookUrlRefused, check_webhook_url, sign_payload, signed_headers, verify_signature
from worker.alerts import Transition, decide

SECRET = "s3cret-s3cret-s3cret"
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_a_signed_delivery_verifies_and_a_replay_or_tampering_does_not() -> None:
    # GIVEN a delivery signed now
    body = b'{"status":"firing"}'
    headers = signed_headers(SECRET, body, "d1", now=1_000_000)
    timestamp, signature = headers["X-Berth-Timestamp"], headers["X-Berth-Signature"]
    # THEN the documented check accepts it within the window ...
    assert signature == sign_payload(SECRET, 1_000_000, body)
    assert verify_signature(SECRET, body, timestamp, signature, now=1_000_010)
    # ... and refuses a replay after the window, a changed body or timestamp, another secret, nothing
    assert not verify_signature(SECRET, body, timestamp, signature, now=1_000_000 + 301)
    assert not verify_signature(SECRET, body + b" ", timestamp, signature, now=1_000_010)
    assert not verify_signature(SECRET, body, "1000001", signature, now=1_000_010)
    assert not verify_signature("other-secret-other", body, timestamp, signature, now=1_000_010)
    assert not verify_signature(SECRET, body, None, signature)
    assert not verify_signature(SECRET, body, "abc", signature)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/x",
        "http://192.168.1.1/x",
        "http://172.16.0.1/x",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://[::ffff:127.0.0.1]/x",
    ],
)
def test_private_webhook_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(WebhookUrlRefused, match="address"):
        check_webhook_url(url, allow_private=False)
    check_webhook_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "http://user:pw@example.com/", "http:///x", "http://h:99999/", "http://h:0/", "http://[x/"],
)
def test_malformed_webhook_urls_are_refused_even_when_private_ones_are_allowed(url: str) -> None:
    with pytest.raises(WebhookUrlRefused):
        check_webhook_url(url, allow_private=True)


LB_METRICS = """# TYPE berth_lb_requests counter
berth_lb_requests_total{listener="L",instance="a",status_class="2xx"} 90.0
berth_lb_requests_total{listener="L",instance="a",status_class="5xx"} 6.0
berth_lb_requests_total{listener="L",instance="b",status_class="error"} 4.0
# TYPE berth_lb_request_duration_seconds histogram
berth_lb_request_duration_seconds_bucket{listener="L",instance="a",le="0.001"} 0.0
berth_lb_request_duration_seconds_bucket{listener="L",instance="a",le="0.005"} 50.0
berth_lb_request_duration_seconds_bucket{listener="L",instance="a",le="0.01"} 96.0
berth_lb_request_duration_seconds_bucket{listener="L",instance="a",le="+Inf"} 96.0
berth_lb_request_duration_seconds_sum{listener="L",instance="a"} 0.5
berth_lb_request_duration_seconds_count{listener="L",instance="a"} 96.0
# TYPE berth_lb_active_connections gauge
berth_lb_active_connections{listener="L"} 3.0
# TYPE berth_lb_received_bytes counter
berth_lb_received_bytes_total{listener="L"} 52000.0
# TYPE berth_lb_sent_bytes counter
berth_lb_sent_bytes_total{listener="L"} 1.048576e+06
# TYPE berth_lb_upstream_sent_bytes counter
berth_lb_upstream_sent_bytes_total{listener="L",instance="a"} 50000.0
berth_lb_upstream_sent_bytes_total{listener="L",instance="b"} 4000.0
# TYPE berth_lb_upstream_received_bytes counter
berth_lb_upstream_received_bytes_total{listener="L",instance="a"} 1.04e+06
berth_lb_upstream_received_bytes_total{listener="L",instance="b"} 0.0
"""


def test_a_reading_sums_instances_into_the_listener() -> None:
    reading = parse_lb_metrics(LB_METRICS)
    total = reading[("L", "")]
    assert (total.requests, total.errors_connect, total.responses_5xx, total.open_connections) == (100, 4, 6, 3)
    assert sum(total.latency_buckets) == 96
    assert reading[("L", "a")].latency_buckets[:3] == [0, 50, 46]
    # Bytes: the listener's are its own (its clients' side), never the sum of its instances' (their side)
    assert (total.bytes_in, total.bytes_out) == (52_000, 1_048_576)
    assert (reading[("L", "a")].bytes_in, reading[("L", "a")].bytes_out) == (50_000, 1_040_000)
    assert (reading[("L", "b")].bytes_in, reading[("L", "b")].bytes_out) == (4_000, 0)


def test_deltas_survive_a_counter_reset() -> None:
    before = Figures(requests=100, responses_5xx=6, latency_buckets=rebin([(0.005, 50), (float("inf"), 100)]))
    after = Figures(requests=130, responses_5xx=7, latency_buckets=rebin([(0.005, 70), (float("inf"), 130)]))
    change = delta(after, before)
    assert (change.requests, change.responses_5xx, sum(change.latency_buckets)) == (30, 1, 30)
    # WHEN lb-runtime restarts, its counters start again: the new value is the delta
    restarted = Figures(requests=5, latency_buckets=rebin([(0.005, 5), (float("inf"), 5)]))
    assert delta(restarted, after).requests == 5
    assert sum(delta(restarted, after).latency_buckets) == 5


def test_byte_deltas_grow_and_restart_on_their_own() -> None:
    before = Figures(requests=100, bytes_in=10_000, bytes_out=900_000)
    # GIVEN counters that grew: the growth
    change = delta(Figures(requests=130, bytes_in=13_000, bytes_out=1_000_000), before)
    assert (change.bytes_in, change.bytes_out) == (3_000, 100_000)
    # a byte counter below its last reading (the listener was bound anew) starts again: its value is the growth,
    # and the requests' delta is untouched
    rebound = delta(Figures(requests=130, bytes_in=2_000, bytes_out=950_000), before)
    assert (rebound.requests, rebound.bytes_in, rebound.bytes_out) == (30, 2_000, 50_000)
    # after a restart (the requests went down) the bytes count from zero even when they exceed the old reading
    restarted = delta(Figures(requests=5, bytes_in=20_000, bytes_out=5_000), before)
    assert (restarted.requests, restarted.bytes_in, restarted.bytes_out) == (5, 20_000, 5_000)
    # and the cursor keeps them
    assert Figures.from_json(before.as_json()) == before


def test_a_series_sums_bytes_into_its_steps() -> None:
    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    rows = [
        {
            "ts": start + timedelta(seconds=10 * index),
            "requests": 2,
            "errors_connect": 0,
            "responses_4xx": 0,
            "responses_5xx": 0,
            "open_connections": 1,
            "latency_buckets": [0] * BUCKET_COUNT,
            "bytes_in": 100 * (index + 1),
            "bytes_out": 1000 * (index + 1),
        }
        for index in range(9)
    ]
    # Six 10 s rows in the first minute, three in the second: each minute's point holds the sum of its rows
    points = _series(rows, start, start + timedelta(minutes=2), 60)
    assert [(p.requests, p.bytes_in, p.bytes_out) for p in points] == [(12, 2_100, 21_000), (6, 2_400, 24_000)]


def test_percentiles_interpolate_within_their_bucket() -> None:
    buckets = [0] * (len(LATENCY_BOUNDS) + 1)
    buckets[1] = 100  # all between 1 ms and 5 ms
    assert quantile_ms(buckets, 0.5) == pytest.approx(3.0)
    assert quantile_ms([0] * len(buckets), 0.5) is None


def _decide(open_state: str | None, active: bool, *, started: int = 0, clear: int | None = None) -> Transition:
    return decide(
        open_state=open_state,
        started_at=NOW - timedelta(seconds=started),
        clear_since=None if clear is None else NOW - timedelta(seconds=clear),
        active=active,
        now=NOW,
        for_seconds=30,
        resolve_after_seconds=20,
    ).transition


@pytest.mark.parametrize(
    ("open_state", "active", "started", "clear", "expected"),
    [
        (None, False, 0, None, Transition.NONE),
        (None, True, 0, None, Transition.OPEN),
        ("pending", True, 10, None, Transition.NONE),
        ("pending", True, 30, None, Transition.FIRE),
        ("pending", False, 10, None, Transition.DISMISS),
        ("firing", True, 99, None, Transition.NONE),
        ("firing", False, 99, None, Transition.HOLD),
        ("firing", False, 99, 10, Transition.HOLD),
        ("firing", False, 99, 20, Transition.RESOLVE),
    ],
)
def test_the_alert_state_machine(
    open_state: str | None, active: bool, started: int, clear: int | None, expected: Transition
) -> None:
    assert _decide(open_state, active, started=started, clear=clear) is expected


def test_for_zero_fires_at_once_and_no_hold_off_resolves_at_once() -> None:
    fired = decide(
        open_state=None, started_at=None, clear_since=None, active=True, now=NOW, for_seconds=0, resolve_after_seconds=0
    )
    assert fired.transition is Transition.OPEN_AND_FIRE
    resolved = decide(
        open_state="firing",
        started_at=NOW,
        clear_since=None,
        active=False,
        now=NOW,
        for_seconds=0,
        resolve_after_seconds=0,
    )
    assert resolved.transition is Transition.RESOLVE


def test_history_windows() -> None:
    since, until, step, resolution = history_window(None, None, None, NOW)
    assert (until - since, step, resolution) == (timedelta(hours=1), 10, 10)
    _, _, step, resolution = history_window((NOW - timedelta(days=7)).isoformat(), None, None, NOW)
    assert step % 60 == 0 and resolution == 60
    for start, end, bad_step in [
        ("2026-05-01T12:00:00Z", "2026-05-01T11:00:00Z", None),  # backwards
        (None, None, 15),  # not a multiple of 10
        ((NOW - timedelta(days=2)).isoformat(), None, 10),  # 10 s history is a day deep
        ((NOW - timedelta(days=31)).isoformat(), None, 3600),  # beyond 30 days
        ("yesterday", None, None),
        ("2026-05-01T10:00:00", None, None),  # no time zone
        ("2026-05-01 10:00:00Z", None, None),  # not RFC 3339's date-time (a space), though ISO 8601 allows it
        (str(int((NOW - timedelta(hours=1)).timestamp())), None, None),  # Unix seconds: not a date-time
        ((NOW - timedelta(hours=23)).isoformat(), None, 10),  # more than 1000 steps
    ]:
        with pytest.raises(ValidationFailed):
            history_window(start, end, bad_step, NOW)
