"""The alerts page and listener history in a real browser: a user adds a webhook (a too-short secret is
refused in words, the secret is never shown back) and rules (on a listener, on a quota), sees them listed
with the alert history, deletes them; a listener's charts open with its recorded traffic instead of starting empty.

The listener and its history are written straight into the database (what the worker's traffic recorder
writes): the recording itself is tested through lb-runtime in tests/e2e/test_traffic_history.py."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import expect

from shared.traffic_history import BUCKET_COUNT
from tests.conftest import TEST_DATABASE_URL, RunningGateway, free_port
from tests.ui.conftest import BrowserSession, api_tokens, sign_up_in_browser

SECRET = "ui-webhook-secret-" + "7" * 12
HOOK_URL = "http://127.0.0.1:9/berth-hook"
REQUESTS_PER_SAMPLE = 50  # in 10 s: 5 requests per second
BYTES_IN_PER_SAMPLE, BYTES_OUT_PER_SAMPLE = 20_000, 500_000  # in 10 s: 2 KB/s in, 50 KB/s out


@pytest.fixture
def seeded_listener(gateway: RunningGateway, ui_user: tuple[str, str]) -> Iterator[dict[str, Any]]:
    """A factory's worth of state: once the user exists, ``seed()`` gives them a listener with 12 recorded
    10-second samples in the last few minutes; the listener is deleted at the end."""
    made: dict[str, Any] = {}

    def seed(user_id: str) -> dict[str, Any]:
        port = free_port()
        now = datetime.now(UTC)
        aligned = datetime.fromtimestamp(now.timestamp() // 10 * 10, UTC)
        buckets = [0] * BUCKET_COUNT
        buckets[2] = REQUESTS_PER_SAMPLE  # every request took 5-10 ms
        with psycopg.connect(TEST_DATABASE_URL) as conn:
            row = conn.execute(
                "INSERT INTO listeners (owner_id, service, port, protocol, algorithm) "
                "VALUES (%s, 'web', %s, 'http', 'round_robin') RETURNING id",
                (user_id, port),
            ).fetchone()
            assert row is not None
            listener_id = str(row[0])
            for steps_ago in range(2, 14):
                conn.execute(
                    "INSERT INTO traffic_samples (listener_id, instance, resolution, ts, requests, latency_buckets, "
                    "latency_sum, bytes_in, bytes_out) VALUES (%s, '', 10, %s, %s, %s, %s, %s, %s)",
                    (
                        listener_id,
                        aligned - timedelta(seconds=10 * steps_ago),
                        REQUESTS_PER_SAMPLE,
                        buckets,
                        0.35,
                        BYTES_IN_PER_SAMPLE,
                        BYTES_OUT_PER_SAMPLE,
                    ),
                )
        made.update(id=listener_id, port=port)
        return made

    made["seed"] = seed
    yield made
    if "id" in made:
        with psycopg.connect(TEST_DATABASE_URL) as conn:
            conn.execute("DELETE FROM listeners WHERE id = %s", (made["id"],))


def seed_alerts(rule_id: str, owner_id: str) -> None:
    """Two episodes of the rule, as the evaluator records them: one resolved, one pending."""
    now = datetime.now(UTC)
    with psycopg.connect(TEST_DATABASE_URL) as conn:
        conn.execute(
            "INSERT INTO alerts (rule_id, owner_id, state, started_at, fired_at, resolved_at, summary) VALUES "
            "(%s, %s, 'resolved', %s, %s, %s, %s), (%s, %s, 'pending', %s, NULL, NULL, %s)",
            (
                rule_id,
                owner_id,
                now - timedelta(minutes=20),
                now - timedelta(minutes=19),
                now - timedelta(minutes=10),
                "listener web: 40.0% of 20 requests failed <b>in</b> 300 s",
                rule_id,
                owner_id,
                now - timedelta(seconds=30),
                "listener web: 9.0% of 100 requests failed in 300 s",
            ),
        )


def test_alerts_page_manages_webhooks_and_rules_and_listener_charts_open_with_history(
    browser_session: BrowserSession,
    gateway: RunningGateway,
    lb_runtime: Any,
    ui_user: tuple[str, str],
    seeded_listener: dict[str, Any],
) -> None:
    session = browser_session
    page = session.page
    email, password = ui_user
    sign_up_in_browser(session, email, password)
    api = api_tokens(gateway.url, email, password)
    me = httpx.get(f"{gateway.url}/api/auth/me", headers=api, timeout=30).json()

    # GIVEN a listener with ten-second traffic samples recorded over the last two minutes
    listener = seeded_listener["seed"](me["id"])

    # WHEN the user opens Services, THEN the listener's charts show that history at once (5 req/s at its
    # peak), not "No data yet" waiting for live polls
    opened = time.monotonic()
    session.go("/services")
    card = page.locator(f'article.listener[data-listener="{listener["id"]}"]')
    rps_chart = card.locator('figure[data-metric="rps"] svg')
    expect(rps_chart).to_have_attribute("aria-label", re.compile(r", \d{2,} samples; now RPS"), timeout=15_000)
    expect(rps_chart.locator("text.axis-label").first).to_have_text("5.0 req/s")
    expect(card.locator('figure[data-metric="latency"] svg')).to_have_attribute(
        "aria-label", re.compile(r", \d{2,} samples; now p50")
    )
    bandwidth_chart = card.locator('figure[data-metric="bandwidth"] svg')
    expect(bandwidth_chart).to_have_attribute("aria-label", re.compile(r", \d{2,} samples; now In .*, Out "))
    expect(bandwidth_chart.locator("text.axis-label").first).to_have_text("50.0 KB/s")
    assert time.monotonic() - opened < 15  # far fewer than 12 live polls (2 s apart) could have drawn
    session.screenshot("alerts-01-listener-history")

    # WHEN they follow the navigation to Alerts
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Alerts").click()
    expect(page.get_by_role("heading", name="Alerts", exact=True)).to_be_visible()
    # (the alerts function may start cold on a busy machine: the first answer can take a while)
    expect(page.get_by_text("No webhooks yet")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("No rules yet")).to_be_visible(timeout=30_000)
    assert session.unlabelled_controls() == []

    # AND add a webhook with a too-short secret, THEN the refusal says which field and why, in words
    page.get_by_label("Webhook URL").fill(HOOK_URL)
    page.get_by_label("Signing secret").fill("short")
    page.get_by_role("button", name="Add webhook").click()
    refusal = page.locator("form", has=page.get_by_role("button", name="Add webhook")).get_by_role("alert")
    expect(refusal).to_contain_text("secret")
    expect(refusal).to_contain_text("at least 16 characters")
    session.screenshot("alerts-02-webhook-refused")

    # WHEN the secret is long enough, THEN the webhook is listed and its secret is nowhere on the page
    page.get_by_label("Signing secret").fill(SECRET)
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("table.webhooks")).to_contain_text(HOOK_URL)
    expect(refusal).to_be_hidden()
    assert SECRET not in page.content()
    assert page.get_by_label("Signing secret").input_value() == ""

    # WHEN they create an error-rate rule on the listener, THEN it is listed with its subject and state
    page.get_by_label("Kind").select_option("listener_error_rate")
    expect(page.get_by_label("Container")).to_be_hidden()
    page.get_by_label("Listener").select_option(listener["id"])
    page.get_by_label("Error rate above").fill("0.05")
    page.get_by_label("Fire after (seconds)").fill("30")
    page.get_by_role("button", name="Create rule").click()
    rules = page.locator("table.rules")
    expect(rules).to_contain_text(f"Listener error rate on listener web on port {listener['port']}")
    expect(rules).to_contain_text("0.05 (window 300 s)")
    expect(rules.locator(".badge")).to_have_text("ok")
    rule = httpx.get(f"{gateway.url}/api/alerts/rules", headers=api, timeout=30).json()["items"][0]
    assert (rule["kind"], rule["listener_id"], rule["threshold"], rule["for_seconds"]) == (
        "listener_error_rate",
        listener["id"],
        0.05,
        30,
    )

    # GIVEN the rule has a history; THEN the page shows each episode's state, times and summary (as text)
    seed_alerts(rule["id"], me["id"])
    history = page.locator("table.alert-history")
    expect(history.locator("tbody tr")).to_have_count(2, timeout=15_000)
    expect(history.locator("tbody tr").first).to_contain_text("pending")
    expect(history.locator("tbody tr").nth(1)).to_contain_text("resolved")
    expect(history).to_contain_text("40.0% of 20 requests failed <b>in</b> 300 s")  # markup shown, not parsed
    expect(history.locator("b")).to_have_count(0)
    page.get_by_label("Show").select_option("firing")
    expect(page.get_by_text("No firing alerts.")).to_be_visible()
    page.get_by_label("Show").select_option("")
    expect(history.locator("tbody tr")).to_have_count(2)
    session.screenshot("alerts-03-page")

    # WHEN they create a quota rule (no window: use is counted as it stands), THEN it is listed with its share
    page.get_by_label("Kind").select_option("quota_use")
    expect(page.get_by_label("Listener", exact=True)).to_be_hidden()
    expect(page.get_by_label("Window (seconds)")).to_be_hidden()
    page.get_by_label("Quota", exact=True).select_option("max_containers")
    page.get_by_label("Share of the quota at least").fill("0.8")
    page.get_by_role("button", name="Create rule").click()
    expect(rules).to_contain_text("Quota use on quota Containers")
    expect(rules).to_contain_text("80% of the quota")
    listed = httpx.get(f"{gateway.url}/api/alerts/rules", headers=api, timeout=30).json()["items"]
    quota_rule = next(item for item in listed if item["kind"] == "quota_use")
    assert (quota_rule["quota"], quota_rule["threshold"], quota_rule["listener_id"]) == ("max_containers", 0.8, None)
    page.get_by_role("button", name=re.compile(r"^Delete rule Quota use")).click()
    page.get_by_role("dialog", name="Delete rule?").get_by_role("button", name="Delete").click()
    expect(rules).not_to_contain_text("Quota use")

    # WHEN they delete the rule and the webhook (each confirmed), THEN both lists are empty again
    page.get_by_role("button", name=re.compile(r"^Delete rule Listener error rate")).click()
    page.get_by_role("dialog", name="Delete rule?").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No rules yet")).to_be_visible()
    page.get_by_role("button", name=f"Delete webhook {HOOK_URL}").click()
    page.get_by_role("dialog", name="Delete webhook?").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No webhooks yet")).to_be_visible()
    assert httpx.get(f"{gateway.url}/api/alerts/webhooks", headers=api, timeout=30).json()["items"] == []
    assert session.foreign_requests() == []
    assert session.dialogs == []
