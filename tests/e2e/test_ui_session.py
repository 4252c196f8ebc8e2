"""The dashboard through the local gateway, as a browser reaches it: the page and its versioned assets,
and a session whose refresh token only ever travels in the HttpOnly cookie.

The gateway runs the ui function in its own process over a static folder of the test's own, so the
cookie crosses every layer: the request's ``Cookie`` header becomes the event's ``cookies``, and the
function's ``Set-Cookie`` comes back through the Lambda result's ``cookies``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import UNLIMITED, RunningGateway, start_gateway, stop_process
from tests.fixtures.gateway.support import access_log_entry
from tests.support.waiting import wait_until

PASSWORD = "correct horse " + secrets.token_hex(4)
SECRET_MARKER = "beside-the-static-folder-" + secrets.token_hex(4)
APP_JS = ('import { api } from "./api.js";\n' + "export const x = 'a line of the module';\n" * 80).encode()
STATIC_FILES = {
    "index.html": b'<!doctype html><title>Berth</title><script type="module" src="{{ASSETS}}/app.js"></script>',
    "app.js": APP_JS,
    "api.js": b"export const api = {};\n",
}
REFRESH_COOKIE = "berth_refresh"


@dataclass
class UiGateway:
    gateway: RunningGateway
    static_dir: Path


def write_static(root: Path) -> Path:
    (root.parent / "secret.txt").write_text(SECRET_MARKER)
    root.mkdir(parents=True)
    for name, content in STATIC_FILES.items():
        (root / name).write_bytes(content)
    return root


def start_ui_gateway(tmp_dir: Path, *, tls: bool = False) -> UiGateway:
    static_dir = write_static(tmp_dir / "static")
    return UiGateway(start_gateway(tmp_dir, UNLIMITED | {"BERTH_UI_STATIC_DIR": str(static_dir)}, tls=tls), static_dir)


@pytest.fixture(scope="module")
def ui_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiGateway]:
    running = start_ui_gateway(tmp_path_factory.mktemp("ui-gateway"))
    yield running
    stop_process(running.gateway.process)


@pytest.fixture
def browser(ui_gateway: UiGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ui_gateway.gateway.url, timeout=30) as client:
        yield client


def set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """Set-Cookie headers by cookie name: {"": value, attribute (lower case): value}."""
    cookies: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        first, *rest = [part.strip() for part in header.split(";")]
        name, _, value = first.partition("=")
        attributes = {"": value.strip('"')}
        for part in rest:
            key, _, attribute = part.partition("=")
            attributes[key.lower()] = attribute
        cookies[name] = attributes
    return cookies


def refresh_cookie(response: httpx.Response) -> str:
    cookie = set_cookies(response)[REFRESH_COOKIE]
    assert cookie["path"] == "/ui/session"
    assert "httponly" in cookie and cookie["samesite"].lower() == "strict"
    return cookie[""]


def assert_cookie_cleared(response: httpx.Response) -> None:
    cookie = set_cookies(response)[REFRESH_COOKIE]
    assert cookie[""] == "" and cookie["max-age"] == "0"


def from_ui(cookie: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"X-Berth-UI": "1", **extra}
    if cookie is not None:
        headers["Cookie"] = f"{REFRESH_COOKIE}={cookie}"
    return headers


def me(browser: httpx.Client, access_token: str) -> httpx.Response:
    return browser.get("/api/auth/me", headers={"Authorization": f"Bearer {access_token}"})


def sign_up(browser: httpx.Client) -> tuple[str, str]:
    email = f"ui-{secrets.token_hex(6)}@example.com"
    created = browser.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return email, str(created.json()["id"])


def test_the_page_and_its_assets_come_through_the_gateway(browser: httpx.Client) -> None:
    # GET /ui -> /ui/, and any deep path is the page (the app routes by URL hash)
    redirect = browser.get("/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/ui/"
    page = browser.get("/ui/containers")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert (page.headers["x-frame-options"], page.headers["x-content-type-options"]) == ("DENY", "nosniff")
    match = re.search(r'src="(/ui/assets/([0-9a-f]{12})/app\.js)"', page.text)
    assert match, page.text
    asset_url, build_id = match.groups()

    # The asset the page names: gzip-compressed by the function, base64 through Lambda, intact at the client
    asset = browser.get(asset_url, headers={"Accept-Encoding": "gzip"})
    assert asset.status_code == 200
    assert asset.headers["content-encoding"] == "gzip"
    assert asset.content == APP_JS
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert asset.headers["content-type"] == "text/javascript; charset=utf-8"
    head = browser.head(asset_url, headers={"Accept-Encoding": "gzip"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == asset.headers["etag"]
    # Its relative import resolves inside the same build
    assert browser.get(f"/ui/assets/{build_id}/api.js").content == STATIC_FILES["api.js"]

    # Another build, and a way out of the folder, are 404 JSON
    other = browser.get(asset_url.replace(build_id, "0" * 12))
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    escape = browser.get(f"/ui/assets/{build_id}/%2e%2e/secret.txt")
    assert escape.status_code == 404 and SECRET_MARKER not in escape.text


def test_a_browser_session_lives_in_the_cookie(browser: httpx.Client, ui_gateway: UiGateway) -> None:
    # GIVEN a user who signs up through the API, then signs in through the UI
    email, user_id = sign_up(browser)
    signed_in = browser.post("/ui/session", json={"email": email, "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"] == {"id": user_id, "email": email, "role": "user", "plan": "free"}
    first_cookie = refresh_cookie(signed_in)
    assert "secure" not in set_cookies(signed_in)[REFRESH_COOKIE]  # plain http
    assert first_cookie not in signed_in.text
    # The specific route (throttled like the API's sign-in) served it, in the ui function
    request_id = signed_in.headers["x-request-id"]
    log = ui_gateway.gateway.access_log
    entry = wait_until(lambda: access_log_entry(log(), request_id), message="the sign-in was not logged")
    assert (entry["route"], entry["function"]) == ("POST /ui/session", "UiFunction")

    # WHEN the page resumes the session from the cookie
    assert (
        browser.post("/ui/session/refresh", headers={"Cookie": f"{REFRESH_COOKIE}={first_cookie}"}).status_code == 403
    )
    refreshed = browser.post("/ui/session/refresh", headers=from_ui(first_cookie))

    # THEN a new access token works on the API (through the gateway's JWT authorizer) and the cookie rotated
    assert refreshed.status_code == 200, refreshed.text
    access_token = refreshed.json()["access_token"]
    assert me(browser, access_token).json()["id"] == user_id
    second_cookie = refresh_cookie(refreshed)
    assert second_cookie != first_cookie

    # AND the old cookie value is spent: refused and cleared (and, as on the API, its reuse ends the session)
    replayed = browser.post("/ui/session/refresh", headers=from_ui(first_cookie))
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "refresh_token_reused"
    assert_cookie_cleared(replayed)
    assert me(browser, access_token).status_code == 401
    assert browser.post("/ui/session/refresh", headers=from_ui(second_cookie)).status_code == 401

    # No refresh token ever reaches the access log
    for secret in (first_cookie, second_cookie, access_token, PASSWORD):
        assert secret not in log()


def test_signing_out_ends_the_session_and_clears_the_cookie(browser: httpx.Client) -> None:
    email, _ = sign_up(browser)
    signed_in = browser.post("/ui/session", json={"email": email, "password": PASSWORD})
    access_token, cookie = signed_in.json()["access_token"], refresh_cookie(signed_in)
    bearer = f"Bearer {access_token}"

    # Without the UI's header nothing happens
    refused = browser.delete("/ui/session", headers={"Cookie": f"{REFRESH_COOKIE}={cookie}", "Authorization": bearer})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "ui_header_required"
    assert "set-cookie" not in refused.headers
    assert me(browser, access_token).status_code == 200

    signed_out = browser.delete("/ui/session", headers=from_ui(cookie, Authorization=bearer))

    assert signed_out.status_code == 204
    assert_cookie_cleared(signed_out)
    gone = me(browser, access_token)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "session_revoked"
    after = browser.post("/ui/session/refresh", headers=from_ui(cookie))
    assert after.status_code == 401
    assert_cookie_cleared(after)


def test_wrong_credentials_are_401_without_a_cookie(browser: httpx.Client) -> None:
    email, _ = sign_up(browser)
    response = browser.post("/ui/session", json={"email": email, "password": "not the password"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert "set-cookie" not in response.headers


def test_over_https_the_cookie_is_secure(tmp_path: Path) -> None:
    running = start_ui_gateway(tmp_path, tls=True)
    try:
        with httpx.Client(base_url=running.gateway.url, verify=False, timeout=30) as client:
            email, _ = sign_up(client)
            signed_in = client.post("/ui/session", json={"email": email, "password": PASSWORD})
            assert signed_in.status_code == 200, signed_in.text
            assert "secure" in set_cookies(signed_in)[REFRESH_COOKIE]
            refreshed = client.post("/ui/session/refresh", headers=from_ui(refresh_cookie(signed_in)))
            assert refreshed.status_code == 200
            assert "secure" in set_cookies(refreshed)[REFRESH_COOKIE]
    finally:
        stop_process(running.gateway.process)
