"""The whole journey of a new user, in a real browser, through the real stack: sign up, upload the
project's multi-layer test image and read its findings, upload the web image, deploy two replicas of a
service, put a listener in front, send traffic and watch the RPS chart rise, stop a replica, read its
logs as they arrive, delete everything and sign out. Every page is saved as a screenshot.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import RUN_ID, RunningGateway
from tests.support.docker_images import build_test_image, save_image
from tests.support.plans import move_to_plan
from tests.support.waiting import wait_until
from tests.ui.conftest import (
    NETWORK_CHANGED,
    SLOW,
    BrowserSession,
    api_tokens,
    sign_up_in_browser,
)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-ui"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("ui-web") / "web.tar")
    docker_client.images.remove(tag)
    yield path


class Traffic:
    """GET requests to a listener's port from a background thread until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as client:
            while not self._stop.is_set():
                try:
                    self.answers.append(client.get("/cgi-bin/whoami").status_code)
                except httpx.HTTPError:
                    self.answers.append(0)
                self._stop.wait(0.02)


_WATCH_PROGRESS = """() => {
    window.__uploadProgress = [];
    const text = document.querySelector(".progress-text");
    new MutationObserver(() => window.__uploadProgress.push(text.textContent))
        .observe(text, {childList: true, characterData: true, subtree: true});
}"""


def upload_in_browser(session: BrowserSession, archive: Path, name: str, tag: str) -> str:
    """Upload ``archive`` from the Images page; wait until it is processed; return the image id."""
    page = session.page
    session.go("/images")
    expect(page.get_by_role("heading", name="Images", exact=True)).to_be_visible()
    page.get_by_label("Image archive (docker save)").set_input_files(str(archive))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Tag").fill(tag)
    # Record what the progress bar says: the upload to local storage is over in a blink.
    page.evaluate(_WATCH_PROGRESS)
    page.get_by_role("button", name="Upload image").click()
    page.wait_for_url(re.compile(r".*/ui/#/images/[^/]+$"))
    seen = page.evaluate("() => window.__uploadProgress")
    assert any(text.startswith("Uploading: ") for text in seen), seen
    assert any(text.startswith("Uploading: 100%") for text in seen), seen
    image_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Image {name}:{tag}")
    expect(page.locator(".image-status .badge")).to_have_text("ready", timeout=SLOW)
    return image_id


def container_status(session: BrowserSession, name: str) -> Any:
    return session.page.locator(f'[data-container-status="{name}"] .badge')


def test_a_new_user_walks_the_whole_journey(
    browser_session: BrowserSession,
    gateway: RunningGateway,
    worker: Any,
    lb_runtime: Any,
    findings_archive: Path,
    web_archive: Path,
    ui_user: tuple[str, str],
    test_database: str,
) -> None:
    session = browser_session
    page = session.page
    email, password = ui_user

    # GIVEN a visitor: the dashboard sends them to sign in, where they choose to create an account
    session.open()
    page.wait_for_url("**/ui/#/signin")
    expect(page.get_by_role("heading", name="Sign in to Berth")).to_be_visible()
    session.screenshot("01-sign-in")
    page.get_by_role("link", name="Create an account").click()
    expect(page.get_by_role("heading", name="Create your Berth account")).to_be_visible()
    session.screenshot("02-sign-up")

    # WHEN they sign up, THEN they are signed in and land on their (empty) images
    sign_up_in_browser(session, email, password)
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.get_by_text("No images yet")).to_be_visible()
    session.screenshot("03-images-empty")
    api = api_tokens(gateway.url, email, password)
    # Two listeners side by side is a paying customer's journey (the free plan allows one): an operator
    # moves the account to pro, which applies at once (quotas read the plan from the database).
    with httpx.Client(base_url=gateway.url, timeout=30) as admin_client:
        me = admin_client.get("/api/auth/me", headers=api)
        move_to_plan(admin_client, test_database, me.json()["id"], "pro", email=email, password=password)

    # WHEN they upload the multi-layer test image, THEN its inspection, findings by severity and
    # optimisation report are shown
    findings_id = upload_in_browser(session, findings_archive, "findings", "1")
    critical = page.locator('ul.findings[data-severity="critical"]')
    expect(critical).to_contain_text("/root/.ssh/id_rsa")
    expect(page.locator('ul.findings[data-severity="high"]')).to_contain_text("/bin/suid-helper")
    expect(page.get_by_role("heading", name=re.compile(r"^Critical \(\d+\)$"))).to_be_visible()
    expect(page.get_by_role("heading", name="Inspection")).to_be_visible()
    expect(page.locator("dl.details").first).to_contain_text("API_TOKEN")
    expect(page.get_by_role("heading", name="Optimisation")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Wasted space"))).to_be_visible()
    assert "not-a-real-token" not in page.content()  # env values are never shown, only names
    session.screenshot("04-image-findings")

    # WHEN they upload the web image, THEN both are listed as ready
    web_id = upload_in_browser(session, web_archive, "web", "1")
    session.go("/images")
    expect(page.get_by_role("link", name="findings:1")).to_be_visible()
    expect(page.get_by_role("link", name="web:1")).to_be_visible()
    session.screenshot("05-images")

    # WHEN they deploy two replicas of service "web" publishing port 8080, THEN both run
    session.go("/containers")
    expect(page.get_by_role("heading", name="Containers", exact=True)).to_be_visible()
    page.get_by_label("Image", exact=True).select_option(label="web:1")
    page.get_by_label("Name", exact=True).fill("web")
    page.get_by_label("Service (optional)").fill("web")
    page.get_by_label("Replicas").fill("2")
    page.get_by_role("button", name="Add port").click()
    page.get_by_label("Container port 1").fill("8080")
    page.get_by_role("button", name="Add variable").click()
    page.get_by_label("Variable 1").fill("GREETING")
    page.get_by_label("Value 1").fill("hello")
    page.get_by_role("button", name="Add secret").click()
    page.get_by_label("Secret 1", exact=True).fill("DB_PASSWORD")
    page.get_by_label("Secret value 1").fill("s3cret-" + secrets.token_hex(3))
    assert session.unlabelled_controls() == []
    session.screenshot("06-container-form")
    page.get_by_role("button", name="Create container").click()
    for name in ("web-1", "web-2"):
        expect(container_status(session, name)).to_have_text("running", timeout=SLOW)
    expect(page.get_by_role("row", name=re.compile(r"web-1")).get_by_role("cell").nth(3)).to_contain_text("→ 8080/tcp")
    session.screenshot("07-containers-running")

    # WHEN they create a listener for "web", THEN it shows its external port and both healthy instances
    session.go("/services")
    expect(page.get_by_role("heading", name="Services and load balancing")).to_be_visible()
    page.get_by_label("Service", exact=True).fill("web")
    assert session.unlabelled_controls() == []
    page.get_by_role("button", name="Create listener").click()
    card = page.locator("article.listener")
    expect(card).to_have_count(1)
    address = card.locator(".external-address").inner_text()
    port = int(address.rsplit(":", 1)[1])
    expect(card.locator("tbody tr")).to_have_count(2, timeout=30_000)
    expect(card.locator("tbody .badge", has_text="healthy")).to_have_count(2, timeout=30_000)

    # WHEN traffic reaches the listener's port, THEN the RPS chart shows a rate above zero
    latest_rps = card.locator('.chart-latest[data-metric="rps"]')
    with Traffic(port) as traffic:
        expect(latest_rps).to_have_text(re.compile(r"RPS (?!0\.0 )[0-9]+\.[0-9] req/s"), timeout=30_000)
        expect(card.locator(".chart-latest[data-metric='latency']")).to_contain_text("p50")
        # A few more samples while the traffic lasts: the chart draws a line over time, not one point.
        rps_chart = card.locator('figure[data-metric="rps"] svg')
        expect(rps_chart).to_have_attribute(
            "aria-label", re.compile(r", ([4-9]|\d\d+) samples; now RPS"), timeout=20_000
        )
        expect(card.locator("p.totals")).to_contain_text(re.compile(r"^[1-9][0-9]* requests, 0 errors"))
        session.screenshot("08-services-traffic")
    assert traffic.answers and set(traffic.answers) == {200}, set(traffic.answers)
    rps = float(re.search(r"RPS ([0-9.]+)", latest_rps.inner_text()).group(1))  # type: ignore[union-attr]
    assert rps > 0
    assert card.locator("path.series").count() >= 1

    # WHEN they add a weighted listener, THEN its weights are shown per replica (and it can go again)
    page.get_by_label("Service", exact=True).fill("web")
    page.get_by_label("Algorithm").select_option("weighted")
    page.get_by_label("Weight of web-1").fill("3")
    page.get_by_label("Weight of web-2").fill("1")
    page.get_by_role("button", name="Create listener").click()
    weighted = page.locator("article.listener").filter(has_text="weighted")
    expect(weighted).to_contain_text("web-1: 3, web-2: 1")
    expect(page.locator("article.listener")).to_have_count(2)
    weighted.get_by_role("button", name=re.compile(r"^Delete the listener")).click()
    page.get_by_role("dialog", name="Delete listener?").get_by_role("button", name="Delete").click()
    expect(page.locator("article.listener")).to_have_count(1)
    card = page.locator("article.listener")

    session.go("/discovery")
    expect(page.get_by_role("heading", name=re.compile(r"^web \("))).to_be_visible()
    expect(page.locator("article.card tbody tr")).to_have_count(2)
    session.screenshot("09-discovery")

    # WHEN they stop one replica, THEN its status changes while the other keeps running
    session.go("/containers")
    page.get_by_role("button", name="Stop web-1", exact=True).click()
    expect(container_status(session, "web-1")).to_have_text("stopped", timeout=60_000)
    expect(container_status(session, "web-2")).to_have_text("running")
    expect(page.get_by_role("button", name="Start web-1", exact=True)).to_be_enabled()
    session.screenshot("10-replica-stopped")

    # WHEN they open the other replica, THEN its logs (httpd logs each request) and charts are shown,
    # and a new request's log line appears without a reload
    page.get_by_role("link", name="web-2").click()
    expect(page.get_by_role("heading", name="Container web-2")).to_be_visible()
    logs = page.get_by_role("log", name="Container logs")
    expect(logs.locator("li.log-stderr").first).to_be_visible(timeout=30_000)
    web_2 = next(
        c for c in httpx.get(f"{gateway.url}/api/containers", headers=api).json()["items"] if c["name"] == "web-2"
    )
    marker = f"ui-marker-{secrets.token_hex(4)}"
    host_port = web_2["ports"][0]
    # busybox httpd -v logs each request's path (not its query), found or not
    answer = httpx.get(f"http://{host_port['host_ip']}:{host_port['host_port']}/{marker}", timeout=5)
    assert answer.status_code == 404
    expect(logs).to_contain_text(marker, timeout=30_000)
    expect(page.locator('.chart-latest[data-metric="memory"]')).to_contain_text("Now:", timeout=30_000)
    expect(page.locator('.chart-latest[data-metric="cpu"]')).to_contain_text("%")
    expect(page.locator("dl.details").first).to_contain_text("DB_PASSWORD")
    assert "s3cret-" not in page.content()  # a secret's value never reaches the browser
    session.screenshot("11-container-detail")

    # WHEN they delete everything (each deletion confirmed in a dialog), THEN nothing is left
    session.go("/services")
    delete_listener = page.get_by_role("button", name=f"Delete the listener of web on port {port}")
    delete_listener.click()
    dialog = page.get_by_role("dialog", name="Delete listener?")
    expect(dialog).to_be_visible()
    session.screenshot("12-confirm-dialog", full_page=False)
    page.keyboard.press("Escape")  # keyboard users can back out; nothing is deleted
    expect(dialog).to_have_count(0)
    expect(delete_listener).to_be_focused()
    expect(page.locator("article.listener")).to_have_count(1)
    delete_listener.click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No listeners yet")).to_be_visible()

    session.go("/containers")
    for name in ("web-1", "web-2"):
        page.get_by_role("button", name=f"Delete {name}", exact=True).click()
        page.get_by_role("dialog", name="Delete container?").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No containers yet")).to_be_visible(timeout=60_000)

    for image_id, label in ((findings_id, "findings:1"), (web_id, "web:1")):
        session.go(f"/images/{image_id}")
        expect(page.get_by_role("heading", name=f"Image {label}")).to_be_visible()
        wait_until(
            lambda: not [c for c in httpx.get(f"{gateway.url}/api/containers", headers=api).json()["items"]],
            timeout=60,
            interval=0.25,
            message="the containers were not removed",
        )
        page.get_by_role("button", name="Delete image").click()
        page.get_by_role("dialog", name="Delete image?").get_by_role("button", name="Delete").click()
        page.wait_for_url("**/ui/#/images")
    expect(page.get_by_text("No images yet")).to_be_visible()
    assert httpx.get(f"{gateway.url}/api/images", headers=api).json()["items"] == []
    assert httpx.get(f"{gateway.url}/api/load-balancer/listeners", headers=api).json()["items"] == []

    # WHEN they look at their account and sign out, THEN they are back at sign-in and the session is over
    session.go("/account")
    expect(page.get_by_role("heading", name="Account")).to_be_visible()
    expect(page.locator("dl.details").first).to_contain_text(email)
    session.screenshot("13-account")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/#/signin")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    session.open("/containers")  # a reload finds no session to resume
    page.wait_for_url(re.compile(r".*#/signin\?next=%2Fcontainers$"))
    assert session.foreign_requests() == []
    assert session.dialogs == []
    # Expected: the ended session's 401s, and loads the browser aborted because Docker changed the machine's
    # network (net::ERR_NETWORK_CHANGED: the page sent those calls again, and every step above passed).
    unexpected = [e for e in session.console_errors if "status of 401" not in e and NETWORK_CHANGED not in e]
    assert unexpected == [], (unexpected, session.failed_responses)
