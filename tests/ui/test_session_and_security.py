"""The dashboard's promises beyond the journey: strict headers and no inline code, a small footprint,
the access token only in memory, a session that survives a reload and, once it ends, sends the user to
sign in and back; every error shown in words with what to do next; live updates that pause while the
tab is hidden; and a layout that fits a 375 px phone.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import PROJECT_ROOT, RunningGateway
from tests.ui.conftest import (
    SLOW,
    BrowserSession,
    new_credentials,
    open_browser,
    sign_in_in_browser,
    sign_up_in_browser,
    wait_in_browser,
)

STATIC = PROJECT_ROOT / "functions" / "ui" / "static"
JS_BUDGET_BYTES = 300 * 1024


class _InlineCode(HTMLParser):
    """Collects what a strict CSP would block in an HTML page: inline scripts, styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self._in_script = "src" not in names
        if tag == "style":
            self.problems.append("<style> element")
        self.problems += [f"{tag} {name}=" for name in names if name.startswith("on") or name == "style"]

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline <script>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def test_headers_no_inline_code_and_a_small_footprint(
    playwright_browser: Any, gateway: RunningGateway, ui_origin: str
) -> None:
    # GIVEN the page as the gateway serves it
    index = httpx.get(f"{gateway.url}/ui/", timeout=10)
    assert index.status_code == 200
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert index.headers["x-content-type-options"] == "nosniff"
    assert index.headers["x-frame-options"] == "DENY"
    parser = _InlineCode()
    parser.feed(index.text)
    assert parser.problems == []

    # THEN no module builds markup from strings or evaluates code
    sources = {path.relative_to(STATIC).as_posix(): path.read_text() for path in STATIC.rglob("*.js")}
    for name, source in sources.items():
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert forbidden not in source, f"{name} uses {forbidden}"

    # WHEN a browser loads the app, THEN every script it runs comes from the build, under 300 KB in all
    session = open_browser(playwright_browser, gateway.url)
    scripts: dict[str, int] = {}
    session.page.on(
        "response",
        lambda response: (
            response.request.resource_type == "script" and scripts.__setitem__(response.url, len(response.body()))
        ),
    )
    session.open()
    expect(session.page.get_by_role("heading", name="Sign in to Berth")).to_be_visible()
    wait_in_browser(session.page, lambda: len(scripts) >= len(sources), 10, f"modules loaded: {sorted(scripts)}")
    session.page.wait_for_timeout(500)  # part of the check: a module beyond the build's would have loaded by now
    assert len(scripts) == len(sources), sorted(scripts)  # every module, and nothing else
    assert all(re.search(r"/ui/assets/[0-9a-f]{12}/", url) for url in scripts)
    total = sum(scripts.values())
    assert 0 < total < JS_BUDGET_BYTES, total
    assert session.foreign_requests() == []
    assert session.page_faults() == []
    session.context.close()


def test_the_access_token_lives_only_in_memory_and_a_reload_resumes_the_session(
    browser_session: BrowserSession,
) -> None:
    page = browser_session.page
    email, password = new_credentials()
    sign_up_in_browser(browser_session, email, password)
    browser_session.go("/account")
    expect(page.get_by_role("heading", name="Account")).to_be_visible()

    # THEN web storage holds nothing and the refresh token is a cookie page scripts cannot read
    stored = page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]")
    assert stored == [0, 0, ""], stored
    cookies = {cookie["name"]: cookie for cookie in browser_session.context.cookies()}
    refresh = cookies["berth_refresh"]
    assert refresh["httpOnly"] and refresh["sameSite"] == "Strict" and refresh["path"] == "/ui/session"

    # WHEN the page is reloaded, THEN the session resumes from the cookie on the same page
    page.reload()
    expect(page.get_by_role("heading", name="Account")).to_be_visible()
    expect(page.locator("dl.details")).to_contain_text(email)
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
    browser_session.screenshot("account")


def test_an_ended_session_returns_to_sign_in_and_then_back(browser_session: BrowserSession) -> None:
    page = browser_session.page
    email, password = new_credentials()
    sign_up_in_browser(browser_session, email, password)
    browser_session.go("/account")
    expect(page.get_by_role("heading", name="Account")).to_be_visible()

    # GIVEN the session ends behind the page's back (signed out elsewhere: its tokens stop working)
    ended = page.request.delete(f"{browser_session.base_url}/ui/session", headers={"X-Berth-UI": "1"})
    assert ended.status == 204

    # WHEN the user moves on, THEN the refused call sends them to sign in, saying why
    browser_session.go("/discovery")
    page.wait_for_url(re.compile(r".*#/signin\?next=%2Fdiscovery$"))
    expect(page.get_by_role("status")).to_contain_text("session has ended")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    browser_session.screenshot("session-ended")

    # WHEN they sign in again, THEN they are back where they were going
    sign_in_in_browser(browser_session, email, password)
    page.wait_for_url("**/ui/#/discovery")
    expect(page.get_by_role("heading", name="Service discovery")).to_be_visible()


def test_a_call_the_network_drops_is_sent_again_when_that_is_safe(
    browser_session: BrowserSession, gateway: RunningGateway
) -> None:
    page = browser_session.page
    email, password = new_credentials()
    dropped: list[str] = []

    def lose_the_first_answer(route: Any) -> None:
        """The server acts on the call; the browser sees the connection reset before the answer."""
        if dropped:
            route.continue_()
            return
        dropped.append(route.request.method)
        route.fetch()
        route.abort("connectionreset")

    def drop_the_first_call(route: Any) -> None:
        """The call never reaches the server (the browser aborted it: the network changed)."""
        if len(dropped) > 1:
            route.continue_()
            return
        dropped.append(route.request.method)
        route.abort("internetdisconnected")

    # WHEN the sign-up's answer is lost, THEN the page asks again, finds the account made and signs in to it
    page.route("**/api/auth/signup", lose_the_first_answer)
    sign_up_in_browser(browser_session, email, password)
    assert dropped == ["POST"]
    signed_in = httpx.post(f"{gateway.url}/api/auth/signin", json={"email": email, "password": password}, timeout=30)
    assert signed_in.status_code == 200, signed_in.text

    # WHEN a list's call is dropped, THEN it is sent again and the page shows the list, not an error
    page.route("**/api/containers**", drop_the_first_call)
    browser_session.go("/containers")
    expect(page.get_by_text("No containers yet")).to_be_visible()
    assert dropped == ["POST", "GET"]
    expect(page.get_by_role("alert")).to_have_count(0)


def test_errors_are_explained_with_what_to_do_next(
    browser_session: BrowserSession, worker: Any, tmp_path: Path
) -> None:
    page = browser_session.page
    email, password = new_credentials()

    # A password the policy refuses: the server's reason is shown
    browser_session.open("/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Create account").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Error:")
    expect(alert).to_contain_text("password")
    expect(alert).to_contain_text("Correct the fields named above")

    # Wrong credentials
    sign_up_in_browser(browser_session, email, password)
    browser_session.open("/signin")
    sign_in_in_browser(browser_session, email, password + "-wrong")
    expect(page.get_by_role("alert")).to_contain_text("Check the email address and password")
    browser_session.screenshot("error-sign-in")
    sign_in_in_browser(browser_session, email, password)
    page.wait_for_url("**/ui/#/containers")

    # A file that is not a `docker save` archive: refused after upload, with what to do about it
    junk = tmp_path / "notes.tar"
    junk.write_text("these are my notes, not an image\n" * 100)
    browser_session.go("/images")
    page.get_by_label("Image archive (docker save)").set_input_files(str(junk))
    expect(page.get_by_label("Name")).to_have_value("notes")  # suggested from the file name
    page.get_by_role("button", name="Upload image").click()
    page.wait_for_url(re.compile(r".*#/images/[^/]+$"))
    expect(page.locator(".image-status .badge")).to_have_text("rejected", timeout=SLOW)
    rejected = page.get_by_role("alert")
    expect(rejected).to_contain_text("Rejected:")
    expect(rejected).to_contain_text("Check the file is a `docker save` archive")
    browser_session.screenshot("error-rejected-image")

    # The same name and tag again: the conflict is explained
    browser_session.go("/images")
    page.get_by_label("Image archive (docker save)").set_input_files(str(junk))
    page.get_by_role("button", name="Upload image").click()
    conflict = page.get_by_role("alert")
    expect(conflict).to_contain_text("notes:latest")
    expect(conflict).to_contain_text("Reference:")


_SET_HIDDEN = """hidden => {
    const state = hidden ? "hidden" : "visible";
    Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
    Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def set_tab_hidden(page: Any, *, hidden: bool) -> None:
    """What the browser does when the user switches tabs (headless Chromium never hides a page itself)."""
    page.evaluate(_SET_HIDDEN, hidden)


def _api_requests(session: BrowserSession) -> int:
    return sum(1 for url in session.requests if "/api/" in url)


def test_live_updates_pause_while_the_tab_is_hidden(browser_session: BrowserSession) -> None:
    page = browser_session.page
    email, password = new_credentials()
    sign_up_in_browser(browser_session, email, password)
    browser_session.go("/containers")
    expect(page.get_by_text("No containers yet")).to_be_visible()

    # WHILE visible, the list is polled
    before = _api_requests(browser_session)
    wait_in_browser(
        page, lambda: _api_requests(browser_session) >= before + 2, 10, "the list is not polled while visible"
    )

    # WHEN the tab is hidden, THEN polling stops
    set_tab_hidden(page, hidden=True)
    # a poll already in flight may still land
    wait_in_browser(page, lambda: browser_session.in_flight == 0, 10, "a request in flight never ended")
    paused_at = _api_requests(browser_session)
    page.wait_for_timeout(5000)  # part of the check: five seconds hidden, and not one request
    assert _api_requests(browser_session) == paused_at

    # WHEN it is shown again, THEN polling resumes at once
    set_tab_hidden(page, hidden=False)
    wait_in_browser(page, lambda: _api_requests(browser_session) > paused_at, 2, "polling did not resume when shown")


@pytest.mark.parametrize("route", ["/containers", "/images", "/services", "/account"])
def test_pages_fit_a_phone(playwright_browser: Any, gateway: RunningGateway, ui_origin: str, route: str) -> None:
    session = open_browser(playwright_browser, gateway.url)
    session.page.set_viewport_size({"width": 375, "height": 812})
    try:
        email, password = new_credentials()
        sign_up_in_browser(session, email, password)
        session.go(route)
        expect(session.page.locator("main h1")).to_have_count(1)
        # the page's first answers are drawn: no list still busy, no "Loading…" placeholder left
        main = session.page.locator("main")
        expect(main.locator("[aria-busy='true']")).to_have_count(0)
        expect(main.get_by_text(re.compile(r"^Loading"))).to_have_count(0)
        width = session.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, f"{route} is {width}px wide on a 375px screen"
        session.screenshot(f"phone{route.replace('/', '-')}")
        assert session.page_faults() == []
        assert session.unlabelled_controls() == []
    finally:
        session.context.close()
