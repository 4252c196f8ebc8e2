"""The services page in a real browser, through the real stack: a user creates service "web" with 2 replicas
behind an HTTP health check, deploys a change and watches release 2 roll until healthy, scales to 1, rolls
back to the previous healthy release (confirming in a dialog) and deletes the service by typing its name.
Every step is saved as a screenshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import RUN_ID, RunningGateway
from tests.support.docker_images import build_test_image, save_image
from tests.support.waiting import wait_until
from tests.ui.conftest import SLOW, BrowserSession, api_tokens, sign_up_in_browser
from tests.ui.test_journey import upload_in_browser

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-ui-services"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("ui-services") / "web.tar")
    docker_client.images.remove(tag)
    yield path


def release_status(session: BrowserSession, number: int) -> Any:
    return session.page.locator(f'[data-release-status="{number}"] .badge')


def test_a_user_deploys_scales_rolls_back_and_deletes_a_service(
    browser_session: BrowserSession,
    gateway: RunningGateway,
    worker: Any,
    lb_runtime: Any,
    web_archive: Path,
    ui_user: tuple[str, str],
) -> None:
    session = browser_session
    page = session.page
    email, password = ui_user
    sign_up_in_browser(session, email, password)
    upload_in_browser(session, web_archive, "web", "1")

    # GIVEN the services page, reached from the navigation
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Deployments").click()
    expect(page.get_by_role("heading", name="Services and releases")).to_be_visible()
    expect(page.get_by_text("No services yet")).to_be_visible()

    # WHEN they create "web": 2 replicas of web:1 on port 8080 with an HTTP health check
    page.get_by_label("Service name").fill("web")
    page.get_by_label("Image", exact=True).select_option(label="web:1")
    page.get_by_label("Replicas").fill("2")
    page.get_by_label("Container port (optional)").fill("8080")
    page.get_by_label("Health check", exact=True).select_option("http")
    page.get_by_label("Health check path (HTTP)").fill("/cgi-bin/whoami")
    page.get_by_label("Check every (seconds)").fill("1")
    page.get_by_label("Healthy for (seconds)").fill("1")
    page.get_by_role("button", name="Add region").click()
    page.get_by_label("Region 1", exact=True).fill("local")
    page.get_by_label("Minimum 1", exact=True).fill("1")
    assert session.unlabelled_controls() == []
    session.screenshot("services-01-create")
    page.get_by_role("button", name="Create service").click()

    # THEN its page shows release 1 healthy, with its 2 replicas grouped under it
    page.wait_for_url("**/ui/#/deployments/web")
    expect(page.get_by_role("heading", name="Service web", level=1)).to_be_visible()
    expect(release_status(session, 1)).to_have_text("healthy", timeout=SLOW)
    group = page.locator('.release-group[data-release="1"]')
    expect(group.locator("tbody tr")).to_have_count(2)
    expect(group.locator("tbody .badge", has_text="running")).to_have_count(2)
    expect(page.locator(".service-ready")).to_have_text("2 of 2 ready")
    created = httpx.get(f"{gateway.url}/api/services/web", headers=api_tokens(gateway.url, email, password))
    assert created.json()["update_policy"]["min_healthy_seconds"] == 1
    assert created.json()["regions"] == [{"name": "local", "min": 1}]
    expect(page.locator("dl.details")).to_contain_text("local (at least 1)")
    assert session.unlabelled_controls() == []
    session.screenshot("services-02-release-1")

    # WHEN they deploy a change (an environment variable): progress follows release 2 until it is healthy
    page.get_by_role("button", name="Add variable").click()
    page.get_by_label("Name 1", exact=True).fill("GREETING")
    page.get_by_label("Value 1", exact=True).fill("hello <b>two</b>")
    page.get_by_role("button", name="Deploy", exact=True).click()
    progress = page.locator('[data-release-progress="2"]')
    expect(progress).to_be_visible()
    session.screenshot("services-03-rolling")
    expect(release_status(session, 2)).to_have_text("healthy", timeout=SLOW)
    expect(progress).to_have_text("Release 2 is healthy.")
    expect(release_status(session, 1)).to_have_text("superseded")
    expect(page.locator('.release-group[data-release="2"] tbody tr')).to_have_count(2, timeout=30_000)
    expect(page.locator('.release-group[data-release="1"]')).to_have_count(0, timeout=30_000)
    expect(page.locator("dl.details")).to_contain_text("GREETING")
    session.screenshot("services-04-release-2")

    # WHEN they scale to 1: no new release, one replica drains away
    page.get_by_label("Replicas", exact=True).fill("1")
    page.get_by_role("button", name="Scale", exact=True).click()
    expect(page.locator(".service-ready")).to_have_text("1 of 1 ready", timeout=SLOW)
    expect(page.locator('.release-group[data-release="2"] tbody tr')).to_have_count(1, timeout=SLOW)
    session.screenshot("services-05-scaled")

    # WHEN they roll back to the previous healthy release, confirming in the dialog
    page.get_by_role("button", name="Roll back to the previous healthy release").click()
    dialog = page.get_by_role("dialog", name="Roll back?")
    expect(dialog).to_contain_text("Roll web back to the previous healthy release?")
    session.screenshot("services-06-rollback-dialog", full_page=False)
    dialog.get_by_role("button", name="Roll back").click()

    # THEN release 3 carries release 1's configuration and becomes healthy; the history says why
    expect(release_status(session, 3)).to_have_text("healthy", timeout=SLOW)
    expect(page.locator('tr:has([data-release-status="3"])')).to_contain_text("rollback to release 1")
    expect(page.locator("dl.details")).not_to_contain_text("GREETING")
    expect(page.locator('.release-group[data-release="3"] tbody tr')).to_have_count(1, timeout=30_000)
    session.screenshot("services-07-rolled-back")

    # WHEN they delete it: the name must be typed first
    page.get_by_role("button", name="Delete service").click()
    confirm = page.get_by_role("dialog", name="Delete service?")
    delete = confirm.get_by_role("button", name="Delete service")
    expect(delete).to_be_disabled()
    confirm.get_by_label("Service name").fill("we")
    expect(delete).to_be_disabled()
    confirm.get_by_label("Service name").fill("web")
    session.screenshot("services-08-delete-dialog", full_page=False)
    delete.click()
    page.wait_for_url("**/ui/#/deployments")
    expect(page.get_by_text("No services yet")).to_be_visible()

    headers = api_tokens(gateway.url, email, password)
    wait_until(
        lambda: (
            not [
                c
                for c in httpx.get(f"{gateway.url}/api/containers", headers=headers).json()["items"]
                if c["status"] != "deleted"
            ]
        ),
        timeout=60,
        interval=0.5,
        message="the service's replicas were not removed",
    )
    assert session.foreign_requests() == []
    assert session.dialogs == []
