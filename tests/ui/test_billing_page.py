"""The billing page in a real browser: a user with a running container sees their plan's quotas with what
is in use, usage charts per meter, their draft invoice with its lines and total as money, downloads the usage
as CSV, and reads a quota refusal (creating past the plan's containers) in words.

The metered usage shown is written straight into the hourly rollups (what invoices and usage read), so the
page is checked against known figures without waiting out the session worker's metering windows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
from playwright.sync_api import expect

from tests.conftest import RUN_ID, TEST_DATABASE_URL, RunningGateway
from tests.e2e.conftest import SignedInUser
from tests.e2e.test_images import upload_and_process
from tests.support.docker_images import build_test_image, save_image
from tests.support.waiting import wait_until
from tests.ui.conftest import SLOW, BrowserSession, sign_in_in_browser

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-ui-billing"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("ui-billing") / "web.tar")
    docker_client.images.remove(tag)
    yield path


def _signed_up(client: httpx.Client, email: str, password: str) -> SignedInUser:
    created = client.post("/api/auth/signup", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    tokens = client.post("/api/auth/signin", json={"email": email, "password": password}).json()
    return SignedInUser(created.json()["id"], email, password, tokens["access_token"], tokens["refresh_token"])


def test_billing_page_shows_quotas_usage_invoice_and_quota_errors(
    browser_session: BrowserSession,
    gateway: RunningGateway,
    worker: Any,
    web_archive: Path,
    ui_user: tuple[str, str],
) -> None:
    session, page = browser_session, browser_session.page
    email, password = ui_user
    client = httpx.Client(base_url=gateway.url, timeout=30)

    # GIVEN a user on the free plan (3 containers) with one running container and 10 CPU-hours metered
    user = _signed_up(client, email, password)
    image = upload_and_process(client, user, "web", web_archive)
    assert image["status"] == "ready", image
    created = client.post(
        "/api/containers", json={"image_id": image["id"], "name": "billed", "memory_mb": 256}, headers=user.auth_headers
    )
    assert created.status_code in (201, 202), created.text
    container_id = created.json()["id"]
    wait_until(
        lambda: client.get(f"/api/containers/{container_id}", headers=user.auth_headers).json()["status"] == "running",
        timeout=SLOW / 1000,
        interval=0.5,
        message="the container did not start",
    )
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO usage_rollups (owner_id, hour, meter, service, quantity) "
            "VALUES (%s, date_trunc('hour', now()), 'cpu_seconds', '', 36000)",
            (user.id,),
        )

    # WHEN they open Billing from the navigation
    session.open("/signin")
    sign_in_in_browser(session, email, password)
    page.wait_for_url(re.compile(r".*/ui/#/(containers|images)$"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Billing", exact=True)).to_be_visible()

    # THEN the plan's quotas are shown with what is in use
    expect(page.locator(".plan-name")).to_have_text("free", timeout=60_000)
    quotas = page.get_by_role("table", name=re.compile("^Quotas"))
    containers_row = quotas.get_by_role("row", name=re.compile(r"^Containers"))
    expect(containers_row.get_by_role("cell").nth(1)).to_have_text("1")
    expect(containers_row.get_by_role("cell").nth(2)).to_have_text("3")
    expect(page.get_by_role("progressbar", name="Containers: 1 of 3 used")).to_be_visible()
    # ... a chart per metered meter, by day
    expect(page.locator('figure[data-metric="cpu_seconds"] figcaption')).to_have_text("CPU time")
    expect(page.locator('.chart-latest[data-metric="cpu_seconds"]')).to_contain_text("36,000 cpu-second")
    # ... and this month's draft invoice, priced in money
    invoices = page.get_by_role("table", name=re.compile("^Your invoices"))
    draft = invoices.get_by_role("row").filter(has=page.locator(".badge", has_text="draft"))
    expect(draft).to_have_count(1)
    expect(draft).to_contain_text("$0.00")  # the free plan prices CPU at 0
    session.screenshot("billing-01-page")

    # WHEN they download the usage as CSV, THEN it holds the metered CPU seconds by day
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download usage (CSV)").click()
    csv_text = Path(download_info.value.path()).read_text()
    assert csv_text.splitlines()[0] == "meter,day,quantity,unit"
    assert re.search(r"^cpu_seconds,\d{4}-\d\d-\d\d,36000,cpu-second$", csv_text, re.M), csv_text

    # WHEN they open the draft, THEN its lines show quantity, unit price and amount, and the total
    draft.get_by_role("link", name=re.compile("^Invoice of")).click()
    expect(page.get_by_role("heading", name=re.compile(r"^Invoice \d{4}-\d\d \(draft\)$"))).to_be_visible()
    line = page.get_by_role("table", name="Invoice lines").get_by_role("row", name=re.compile("^CPU time"))
    expect(line).to_contain_text("36,000 cpu-second")
    expect(line).to_contain_text("per cpu-hour")
    expect(page.locator(".invoice-total")).to_have_text("Total: $0.00")
    session.screenshot("billing-02-invoice")

    # WHEN they ask for three more containers (the plan allows 3 in all), THEN the refusal is put in words
    session.go("/containers")
    expect(page.get_by_role("heading", name="Containers", exact=True)).to_be_visible()
    page.get_by_label("Image", exact=True).select_option(label="web:1")
    page.get_by_label("Name", exact=True).fill("more")
    page.get_by_label("Replicas").fill("3")
    page.get_by_role("button", name="Create container").click()
    alert = page.locator(".error-box", has_text="Quota reached")
    expect(alert).to_contain_text("Quota reached: containers (your plan's limit 3, in use 3).", timeout=30_000)
    expect(alert).to_contain_text("ask for a larger plan")
    session.screenshot("billing-03-quota-error")
    assert session.foreign_requests() == []
    client.close()
