"""Browser tests of the dashboard: Playwright (sync API) driving Debian's Chromium at /usr/bin/chromium
(never a downloaded browser) against the session's real gateway, worker and lb-runtime.

Every page the tests visit is saved as a screenshot in .berth/ui-screenshots/ (git-ignored). Each browser
context records every request it makes, so a test can assert the page never left 127.0.0.1, and every
JavaScript dialog it opens, so hostile strings that executed would be noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest

from gateway.settings import GatewaySettings
from tests.conftest import LOCAL_AWS_URL, PROJECT_ROOT, RunningGateway
from tests.support.docker_containers import remove_labelled
from tests.support.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = PROJECT_ROOT / ".berth" / "ui-screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
# Long enough for the worker to load an image on a busy 2-core machine; most waits end far sooner.
SLOW = 120_000


@pytest.fixture(scope="module")
def playwright_browser() -> Iterator[Any]:
    """Chromium for one test module. Module-scoped on purpose: Playwright's sync API keeps an event loop
    running while it is open, and the asyncio tests that run after tests/ui need it gone."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is needed at /usr/bin/chromium (make bootstrap installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        yield browser
        browser.close()
    # Leaving, Playwright sets the main thread's event loop to None, after which asyncio.get_event_loop()
    # raises where a plain process would create one (Mangum's handlers call it): give the thread a loop again.
    asyncio.set_event_loop(asyncio.new_event_loop())


@pytest.fixture(autouse=True)
def _backing_services(backing_services: None) -> None:
    """Every browser test drives a gateway that talks to PostgreSQL, Redis and moto."""


@pytest.fixture(scope="session")
def ui_started(gateway: RunningGateway) -> None:
    """The browser tests meet a running platform, as its users do: the ui function's instances (as many as the
    gateway runs at once; a page loads its modules in parallel) are started before the first page. On a
    loaded machine their cold starts, met by a page, outlasted its 15 s session resume."""
    default = GatewaySettings.model_fields["gateway_function_concurrency"].default
    instances = int(gateway.env.get("BERTH_GATEWAY_FUNCTION_CONCURRENCY", default))
    with ThreadPoolExecutor(instances) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{gateway.url}/ui/", timeout=120).status_code, range(instances)))
    assert answers == [200] * instances, answers


@pytest.fixture
def ui_origin(gateway: RunningGateway, local_aws: str, ui_started: None) -> str:
    """The test gateway's origin, allowed by the images bucket's CORS rule so the browser may POST there.
    Set for each test: other tests of the run's process set the bucket up afresh (ensure_aws_resources),
    which puts back the rule of `berth local up`'s own origins."""
    origin = gateway.url
    s3 = boto3.client("s3", endpoint_url=LOCAL_AWS_URL, region_name="us-east-1")
    bucket = gateway.env.get("BERTH_IMAGES_BUCKET", "berth-images")
    rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    for rule in rules:
        if origin not in rule["AllowedOrigins"]:
            rule["AllowedOrigins"] = [*rule["AllowedOrigins"], origin]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    return origin


NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"


@dataclass
class BrowserSession:
    """One browser context (a fresh profile) with what it did: requests, dialogs, console errors."""

    context: Any
    page: Any
    base_url: str
    requests: list[str] = field(default_factory=list)
    in_flight: int = 0  # requests sent and not yet finished or failed
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed_responses: list[str] = field(default_factory=list)

    def open(self, route: str = "") -> None:
        """Open the dashboard at ``route`` (a hash route such as "/containers").

        Chromium aborts the loads in flight when the machine's network changes (net::ERR_NETWORK_CHANGED),
        and Docker changes it whenever a container starts or stops (its veth pair, a tenant's bridge): on
        this machine, not the user's. A page whose modules were aborted so is loaded again (twice at most)."""
        seen = len(self.console_errors)
        self.page.goto(f"{self.base_url}/ui/" + (f"#{route}" if route else ""))
        for _ in range(2):
            if not any(NETWORK_CHANGED in error for error in self.console_errors[seen:]):
                return
            seen = len(self.console_errors)
            self.page.reload()

    def go(self, route: str) -> None:
        """Navigate inside the running app (no reload: the session stays in memory)."""
        self.page.evaluate("route => { window.location.hash = route; }", route)

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        # Without the transient status toast, which would sit over whatever is mid-page. (Playwright's own
        # `style` option would inject an inline style, which the page's CSP rightly refuses.)
        self.page.evaluate("() => { const bar = document.getElementById('status'); if (bar) bar.textContent = ''; }")
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def page_faults(self) -> list[str]:
        """CSP violations and uncaught exceptions the page reported."""
        return [e for e in self.console_errors if "Content Security Policy" in e or e.startswith("pageerror:")]

    def unlabelled_controls(self) -> list[str]:
        """Form controls a screen reader could not name (no <label> and no aria-label)."""
        return list(
            self.page.locator("input, select, textarea").evaluate_all(
                "nodes => nodes.filter(n => !n.labels?.length && !n.getAttribute('aria-label'))"
                ".map(n => n.outerHTML.slice(0, 120))"
            )
        )

    def foreign_requests(self) -> list[str]:
        return [
            url for url in self.requests if (urlsplit(url).hostname or "") not in LOCAL_HOSTS and url.startswith("http")
        ]


def open_browser(browser: Any, base_url: str, **context_options: Any) -> BrowserSession:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
    context.set_default_timeout(20_000)
    page = context.new_page()
    session = BrowserSession(context, page, base_url)

    def sent(request: Any) -> None:
        session.requests.append(request.url)
        session.in_flight += 1

    def ended(request: Any) -> None:
        session.in_flight -= 1

    context.on("request", sent)
    context.on("requestfinished", ended)
    context.on("requestfailed", ended)

    def dismiss(dialog: Any) -> None:
        session.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.on("console", lambda message: message.type == "error" and session.console_errors.append(message.text))
    page.on("pageerror", lambda error: session.console_errors.append(f"pageerror: {error}"))
    # The console names no URL for a failed load; keep which one it was, for failure messages.
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and session.failed_responses.append(f"{response.status} {response.request.method} {response.url}")
        ),
    )
    return session


@pytest.fixture
def browser_session(playwright_browser: Any, gateway: RunningGateway, ui_origin: str) -> Iterator[BrowserSession]:
    session = open_browser(playwright_browser, gateway.url)
    yield session
    session.context.close()
    # Whatever the test did, the page broke no CSP rule and threw no uncaught error.
    assert session.page_faults() == []


def new_credentials() -> tuple[str, str]:
    return f"ui-{secrets.token_hex(5)}@example.com", "harbor lantern " + secrets.token_hex(4)


@pytest.fixture
def ui_user(gateway: RunningGateway, docker_client: Any) -> Iterator[tuple[str, str]]:
    """Credentials for a user the test signs up in the browser; whatever Docker runs for them is removed
    at the end, even when the test failed half-way."""
    from worker.container_runtime import OWNER_LABEL

    email, password = new_credentials()
    yield email, password
    answer = httpx.post(f"{gateway.url}/api/auth/signin", json={"email": email, "password": password}, timeout=30)
    if answer.status_code != 200:
        return  # never signed up
    me = httpx.get(f"{gateway.url}/api/auth/me", headers={"Authorization": f"Bearer {answer.json()['access_token']}"})
    remove_labelled(docker_client, OWNER_LABEL, me.json()["id"])


def sign_up_in_browser(session: BrowserSession, email: str, password: str) -> None:
    page = session.page
    session.open("/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/ui/#/images")


def page_state(session: BrowserSession) -> str:
    """What the page shows and what it asked for: for a failure's message."""
    with contextlib.suppress(Exception):
        shown = session.page.locator("body").inner_text(timeout=2_000)[:300]
        return (
            f"url {session.page.url}; shows {shown!r}; {session.in_flight} request(s) in flight; last requests "
            f"{session.requests[-8:]}; console errors {session.console_errors[-5:]}"
        )
    return f"url {session.page.url}; requests {session.requests[-8:]}"


def sign_in_in_browser(session: BrowserSession, email: str, password: str) -> None:
    page = session.page
    try:
        page.get_by_label("Email").wait_for()
    except Exception as exc:
        raise AssertionError(f"no sign-in form: {page_state(session)}") from exc
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def api_tokens(base_url: str, email: str, password: str) -> dict[str, str]:
    """The test's own API session for the same user (to check and clean up what the UI did)."""
    answer = httpx.post(f"{base_url}/api/auth/signin", json={"email": email, "password": password}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def wait_in_browser(page: Any, check: Any, timeout: float, message: str) -> None:
    """wait_until for conditions fed by browser events: Playwright's sync API only delivers events (requests,
    responses) while it is called, so the wait sleeps inside the browser rather than in time.sleep."""
    wait_until(check, timeout=timeout, interval=0.1, message=message, sleep=lambda s: page.wait_for_timeout(s * 1000))
