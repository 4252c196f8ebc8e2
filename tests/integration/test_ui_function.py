"""The ui function in-process (ASGI, and its Lambda handler), over a static folder of the test's own and
the real PostgreSQL, Redis and moto of the test run.

Serving: one build id per set of files, assets cached forever under it, other builds refused, the index
page with its placeholder filled in, security headers on every answer, no way out of the static folder.
Sessions: the refresh token only ever travels in the HttpOnly cookie, and rotates, expires and signs out
as the auth API's does.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import pytest
import redis
from fastapi import FastAPI
from mangum.types import LambdaContext

from functions.auth.app import app as auth_app
from functions.auth.signin_throttle import attempts_key
from functions.ui.app import REFRESH_COOKIE, build_app
from functions.ui.settings import UiSettings
from functions.ui.static_build import StaticBuildError, compute_build_id, load_static_build
from shared.http_app import lambda_handler
from shared.storage import get_object_store
from tests.conftest import LOCAL_AWS_URL

PASSWORD = "correct horse battery"
SECRET_MARKER = "outside-the-static-folder-" + secrets.token_hex(4)
# Long enough to be compressed (the function leaves tiny files as they are).
APP_JS = (
    'import { api } from "./api.js";\nimport { listPage } from "./pages/list.js";\n'
    + "".join(f"export const label{i} = 'line {i} of the test module';\n" for i in range(60))
).encode()
STATIC_FILES: dict[str, bytes] = {
    "index.html": (
        b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Berth</title>'
        b'<link rel="stylesheet" href="{{ASSETS}}/app.css">'
        b'<script type="module" src="{{ASSETS}}/app.js"></script></head><body><main id="app"></main></body></html>'
    ),
    "app.js": APP_JS,
    "api.js": b"export const api = {};\n",
    "app.css": b"body { margin: 0; }\n" + b"".join(b".c%d { padding: %dpx; }\n" % (i, i) for i in range(40)),
    "icon.svg": b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><rect width="8" height="8"/></svg>',
    "pages/list.js": b"export function listPage() { return 'list'; }\n",
}
ASSET_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "pages/list.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
EXPECTED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    f"connect-src 'self' {LOCAL_AWS_URL}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def write_static(root: Path, files: dict[str, bytes] = STATIC_FILES) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@dataclass
class UiUnderTest:
    app: FastAPI
    static_dir: Path
    settings: UiSettings

    @property
    def build_id(self) -> str:
        return str(self.app.state.static_build.build_id)


def make_ui(static_dir: Path) -> UiUnderTest:
    settings = UiSettings().model_copy(update={"ui_static_dir": static_dir})
    return UiUnderTest(build_app(settings), static_dir, settings)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> UiUnderTest:
    root = tmp_path_factory.mktemp("ui")
    # A file beside the static folder, which no request may ever read.
    (root / "secret.txt").write_text(SECRET_MARKER)
    static_dir = write_static(root / "static")
    (static_dir / "escape.txt").symlink_to(root / "secret.txt")
    return make_ui(static_dir)


@pytest.fixture
async def browser(ui: UiUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ui.app), base_url="http://berth.local") as client:
        yield client


@pytest.fixture
async def auth_api() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=auth_app), base_url="http://berth.local") as client:
        yield client


@dataclass
class RawResponse:
    status_code: int
    headers: httpx.Headers
    content: bytes


async def raw_get(client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None) -> RawResponse:
    """A GET with the body as sent (httpx would otherwise undo a gzip encoding)."""
    async with client.stream("GET", path, headers=headers) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    return RawResponse(response.status_code, response.headers, raw)


def assert_security_headers(response: httpx.Response | RawResponse) -> None:
    assert response.headers["content-security-policy"] == EXPECTED_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


# --- the build ----------------------------------------------------------------------------------------


def test_the_build_id_hashes_every_path_and_content(tmp_path: Path) -> None:
    # GIVEN two folders with the same files
    first = load_static_build(write_static(tmp_path / "a"))
    second = load_static_build(write_static(tmp_path / "b"))
    # THEN they make the same build, named by 12 hex digits
    assert first.build_id == second.build_id
    assert len(first.build_id) == 12 and int(first.build_id, 16) >= 0
    assert first.build_id == compute_build_id(STATIC_FILES)

    # WHEN one byte of one asset changes, or a file moves, or the page changes, THEN the build id changes
    changed_css = dict(STATIC_FILES, **{"app.css": STATIC_FILES["app.css"] + b" "})
    moved = {("pages/other.js" if k == "pages/list.js" else k): v for k, v in STATIC_FILES.items()}
    changed_page = dict(STATIC_FILES, **{"index.html": STATIC_FILES["index.html"].replace(b"Berth", b"Berth!")})
    ids = {first.build_id}
    for index, files in enumerate((changed_css, moved, changed_page)):
        build = load_static_build(write_static(tmp_path / f"changed-{index}", files))
        assert build.build_id not in ids
        ids.add(build.build_id)


def test_dot_files_and_links_out_of_the_folder_are_not_part_of_the_build(ui: UiUnderTest, tmp_path: Path) -> None:
    assert set(ui.app.state.static_build.assets) == set(STATIC_FILES) - {"index.html"}
    static_dir = write_static(tmp_path / "static")
    (static_dir / ".hidden.js").write_text("hidden")
    assert load_static_build(static_dir).build_id == compute_build_id(STATIC_FILES)


@pytest.mark.parametrize(
    ("files", "message"),
    [(None, "does not exist"), ({"app.js": b"export {};"}, "has no index.html")],
)
def test_a_folder_without_a_page_fails_at_cold_start(
    tmp_path: Path, files: dict[str, bytes] | None, message: str
) -> None:
    static_dir = tmp_path / "static"
    if files is not None:
        write_static(static_dir, files)
    with pytest.raises(StaticBuildError, match=message):
        make_ui(static_dir)


# --- assets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(ASSET_TYPES))
async def test_an_asset_is_served_immutable_with_its_type(
    browser: httpx.AsyncClient, ui: UiUnderTest, path: str
) -> None:
    response = await raw_get(browser, f"/ui/assets/{ui.build_id}/{path}", {"Accept-Encoding": "identity"})

    assert response.status_code == 200
    assert response.content == STATIC_FILES[path]
    assert response.headers["content-type"] == ASSET_TYPES[path]
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(STATIC_FILES[path])
    assert_security_headers(response)


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.5", "*"])
async def test_an_asset_is_gzip_compressed_when_the_client_accepts_it(
    browser: httpx.AsyncClient, ui: UiUnderTest, accept: str
) -> None:
    response = await raw_get(browser, f"/ui/assets/{ui.build_id}/app.js", {"Accept-Encoding": accept})

    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert len(response.content) < len(APP_JS)
    assert gzip.decompress(response.content) == APP_JS
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "br", "*;q=0", ""])
async def test_an_asset_is_sent_as_is_when_gzip_is_not_accepted(
    browser: httpx.AsyncClient, ui: UiUnderTest, accept: str
) -> None:
    response = await raw_get(browser, f"/ui/assets/{ui.build_id}/app.js", {"Accept-Encoding": accept})

    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.content == APP_JS


@pytest.mark.parametrize(
    "path",
    [
        "/ui/assets/000000000000/app.js",  # another deploy's build
        "/ui/assets/{build}X/app.js",
        "/ui/assets/{build}/missing.js",
        "/ui/assets/{build}/index.html",  # the page is served with its placeholder filled in, only at /ui/
        "/ui/assets/{build}/pages",
        "/ui/assets/{build}",
        "/ui/assets/",
        "/ui/assets",
    ],
)
async def test_other_builds_and_unknown_assets_are_404_json(
    browser: httpx.AsyncClient, ui: UiUnderTest, path: str
) -> None:
    response = await browser.get(path.format(build=ui.build_id))

    assert_error(response, 404, "not_found")
    assert_security_headers(response)
    assert "immutable" not in response.headers.get("cache-control", "")


@pytest.mark.parametrize(
    "path",
    [
        "/ui/assets/{build}/../app.py",
        "/ui/assets/{build}/%2e%2e/secret.txt",
        "/ui/assets/{build}/%2E%2E/secret.txt",
        "/ui/assets/{build}/..%2fsecret.txt",
        "/ui/assets/{build}/%2e%2e%2fsecret.txt",
        "/ui/assets/{build}/..%5csecret.txt",
        "/ui/assets/{build}/pages/%2e%2e/%2e%2e/secret.txt",
        "/ui/assets/{build}//etc/passwd",
        "/ui/assets/{build}/%2fetc%2fpasswd",
        "/ui/assets/{build}/escape.txt",  # a link out of the folder
        "/ui/assets/{build}/./app.js/../../secret.txt",
    ],
)
async def test_no_asset_path_reaches_outside_the_static_folder(
    browser: httpx.AsyncClient, ui: UiUnderTest, path: str
) -> None:
    response = await browser.get(path.format(build=ui.build_id))

    assert_error(response, 404, "not_found")
    assert SECRET_MARKER not in response.text
    assert "import" not in response.text


@pytest.mark.parametrize("raw_path", ["/ui/assets/{build}/../secret.txt", "/ui/assets/{build}/../../app.py"])
def test_no_raw_lambda_path_reaches_outside_the_static_folder(ui: UiUnderTest, raw_path: str) -> None:
    # Straight to the handler: no HTTP client normalises the dot segments first.
    result = invoke(ui, "GET", raw_path.format(build=ui.build_id))

    assert result["statusCode"] == 404
    assert SECRET_MARKER not in result["body"]


async def test_an_asset_is_revalidated_by_its_etag(browser: httpx.AsyncClient, ui: UiUnderTest) -> None:
    path = f"/ui/assets/{ui.build_id}/app.css"
    first = await browser.get(path)
    again = await browser.get(path, headers={"If-None-Match": first.headers["etag"]})
    other = await browser.get(path, headers={"If-None-Match": '"something-else"'})

    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert other.status_code == 200 and other.content == STATIC_FILES["app.css"]


# --- the page -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui/", "/ui/containers", "/ui/containers/c-1/logs", "/ui/index.html", "/ui/?x=1"])
async def test_every_other_path_answers_the_index_page_with_its_assets_url(
    browser: httpx.AsyncClient, ui: UiUnderTest, path: str
) -> None:
    response = await browser.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert "{{ASSETS}}" not in response.text
    assets = f"/ui/assets/{ui.build_id}"
    assert response.text == STATIC_FILES["index.html"].decode().replace("{{ASSETS}}", assets)
    assert_security_headers(response)


async def test_the_assets_the_page_names_are_served(browser: httpx.AsyncClient) -> None:
    page = (await browser.get("/ui/")).text
    urls = [part.split('"', 1)[0] for part in page.split('="')[1:] if part.startswith("/ui/assets/")]
    assert len(urls) == 2
    for url in urls:
        assert (await browser.get(url)).status_code == 200, url


async def test_ui_redirects_to_ui_slash(browser: httpx.AsyncClient) -> None:
    plain = await browser.get("/ui")
    with_query = await browser.get("/ui", params={"next": "x"})

    assert plain.status_code == 308
    assert plain.headers["location"] == "/ui/"
    assert with_query.headers["location"] == "/ui/?next=x"
    assert_security_headers(plain)


@pytest.mark.parametrize("path", ["/ui/", "/ui/assets/{build}/app.js", "/ui/assets/{build}/icon.svg"])
async def test_head_answers_the_get_headers_without_a_body(
    browser: httpx.AsyncClient, ui: UiUnderTest, path: str
) -> None:
    path = path.format(build=ui.build_id)
    for accept in ("gzip", "identity"):
        get = await raw_get(browser, path, {"Accept-Encoding": accept})
        head = await browser.head(path, headers={"Accept-Encoding": accept})

        assert head.status_code == 200
        assert head.content == b""
        for name in ("content-type", "content-length", "cache-control", "etag", "content-security-policy"):
            assert head.headers[name] == get.headers[name], name
        assert head.headers.get("content-encoding") == get.headers.get("content-encoding")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/ui/", {"GET", "HEAD"}),
        ("PUT", "/ui/assets/{build}/app.js", {"GET", "HEAD"}),
        ("GET", "/ui/session", {"POST", "DELETE"}),
        ("GET", "/ui/session/", {"POST", "DELETE"}),
        ("GET", "/ui/session/refresh", {"POST"}),
        ("PATCH", "/ui/session", {"POST", "DELETE"}),
        ("PUT", "/ui/session/refresh", {"POST"}),
        ("POST", "/ui/session/", {"POST", "DELETE"}),
        ("DELETE", "/ui/containers", {"GET", "HEAD"}),
    ],
)
async def test_other_methods_are_refused_with_the_error_shape(
    browser: httpx.AsyncClient, ui: UiUnderTest, method: str, path: str, allowed: set[str]
) -> None:
    response = await browser.request(method, path.format(build=ui.build_id))

    assert_error(response, 405, "method_not_allowed")
    assert {method.strip() for method in response.headers["allow"].split(",")} == allowed
    assert_security_headers(response)


# --- through the Lambda handler -----------------------------------------------------------------------


def invoke(
    ui: UiUnderTest, method: str, path: str, headers: dict[str, str] | None = None, cookies: list[str] | None = None
) -> dict[str, Any]:
    """The ui handler's answer to an API Gateway HTTP API (payload 2.0) event."""
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "ANY /ui/{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "berth.local", **(headers or {})},
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "req-ui-" + secrets.token_hex(4),
            "routeKey": "ANY /ui/{proxy+}",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    return dict(lambda_handler(ui.app)(event, cast(LambdaContext, None)))


def test_a_compressed_asset_leaves_the_lambda_handler_base64_encoded(ui: UiUnderTest) -> None:
    result = invoke(ui, "GET", f"/ui/assets/{ui.build_id}/app.js", {"accept-encoding": "gzip"})

    assert result["statusCode"] == 200
    assert result["isBase64Encoded"] is True
    assert result["headers"]["content-encoding"] == "gzip"
    assert gzip.decompress(base64.b64decode(result["body"])) == APP_JS
    assert result["headers"]["content-security-policy"] == EXPECTED_CSP


@pytest.mark.parametrize(("proto", "secure"), [("https", True), ("http", False)])
def test_the_lambda_handler_returns_the_cookie_in_the_cookies_list(ui: UiUnderTest, proto: str, secure: bool) -> None:
    # No cookie: a 401 that clears the (absent) cookie, without touching the database.
    result = invoke(ui, "POST", "/ui/session/refresh", {"x-berth-ui": "1", "x-forwarded-proto": proto})

    assert result["statusCode"] == 401
    assert json.loads(result["body"])["error"]["code"] == "no_session"
    [cookie] = result["cookies"]
    name, _, attributes = parse_set_cookie(cookie)
    assert name == REFRESH_COOKIE
    assert attributes["max-age"] == "0"
    assert ("secure" in attributes) is secure


# --- sessions -----------------------------------------------------------------------------------------


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, {attribute: value}) of one Set-Cookie header, attribute names in lower case."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    attributes = {}
    for part in rest:
        key, _, attribute = part.partition("=")
        attributes[key.strip().lower()] = attribute.strip()
    return name, value.strip('"'), attributes


def refresh_cookie(response: httpx.Response) -> tuple[str, dict[str, str]]:
    cookies = [parse_set_cookie(header) for header in response.headers.get_list("set-cookie")]
    assert [name for name, _, _ in cookies] == [REFRESH_COOKIE]
    return cookies[0][1], cookies[0][2]


def assert_cookie_cleared(response: httpx.Response) -> None:
    value, attributes = refresh_cookie(response)
    assert value == ""
    assert attributes["max-age"] == "0"
    assert attributes["path"] == "/ui/session"


class Accounts:
    """Accounts signed up through the auth API, removed (with their sign-in counters) afterwards."""

    def __init__(self, auth_api: httpx.AsyncClient) -> None:
        self.auth_api = auth_api
        self.emails: list[str] = []

    async def sign_up(self) -> tuple[str, str]:
        email = f"ui-{secrets.token_hex(6)}@example.com"
        self.emails.append(email)
        response = await self.auth_api.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return email, str(response.json()["id"])

    def remove_all(self, settings: UiSettings) -> None:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM users WHERE email = ANY(%s)", (self.emails,))
        client = redis.Redis.from_url(settings.redis_url)
        for email in self.emails:
            client.delete(attempts_key(settings, email))
        client.close()


@pytest.fixture
def accounts(auth_api: httpx.AsyncClient, ui: UiUnderTest) -> Iterator[Accounts]:
    made = Accounts(auth_api)
    yield made
    made.remove_all(ui.settings)


async def me(auth_api: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await auth_api.get("/api/auth/me", headers={"Authorization": f"Bearer {access_token}"})


def with_cookie(value: str, ui_header: bool = True) -> dict[str, str]:
    headers = {"Cookie": f"{REFRESH_COOKIE}={value}"}
    return headers | ({"X-Berth-UI": "1"} if ui_header else {})


async def test_signing_in_answers_the_user_and_keeps_the_refresh_token_in_an_httponly_cookie(
    browser: httpx.AsyncClient, auth_api: httpx.AsyncClient, accounts: Accounts, ui: UiUnderTest
) -> None:
    # GIVEN an account
    email, user_id = await accounts.sign_up()
    # WHEN the page signs in (with the email in another case)
    response = await browser.post("/ui/session", json={"email": email.upper(), "password": PASSWORD})

    # THEN the body has the access token and the user, and never the refresh token
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "user"}
    assert body["user"] == {"id": user_id, "email": email, "role": "user", "plan": "free"}
    assert body["expires_in"] == ui.settings.access_token_ttl_seconds
    assert response.headers["cache-control"] == "no-store"
    assert_security_headers(response)
    # AND the refresh token is in the cookie, out of reach of scripts and other sites
    token, attributes = refresh_cookie(response)
    assert token and token not in response.text
    assert attributes["path"] == "/ui/session"
    assert attributes["samesite"].lower() == "strict"
    assert "httponly" in attributes
    assert "secure" not in attributes  # plain http (a local gateway); see the https test
    assert attributes["max-age"] == str(ui.settings.refresh_token_ttl_seconds)
    # AND it is a live refresh token of the account's session, and the access token works on the API
    with psycopg.connect(ui.settings.database_url) as conn:
        row = conn.execute(
            "SELECT s.user_id FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id "
            "WHERE t.token_hash = %s AND t.used_at IS NULL",
            (hashlib.sha256(token.encode()).digest(),),
        ).fetchone()
    assert row is not None and str(row[0]) == user_id
    profile = await me(auth_api, body["access_token"])
    assert profile.status_code == 200 and profile.json()["id"] == user_id


async def test_over_https_the_cookie_is_secure(ui: UiUnderTest, accounts: Accounts) -> None:
    email, _ = await accounts.sign_up()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ui.app), base_url="https://berth.local") as client:
        response = await client.post("/ui/session", json={"email": email, "password": PASSWORD})
        _, attributes = refresh_cookie(response)
        assert "secure" in attributes and "httponly" in attributes

        cleared = await client.delete("/ui/session", headers={"X-Berth-UI": "1"})
        assert "secure" in refresh_cookie(cleared)[1]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "nobody-{n}@example.com", "password": PASSWORD}, 401, "invalid_credentials"),
        ({"email": "{email}", "password": "wrong password entirely"}, 401, "invalid_credentials"),
        ({"email": "{email}"}, 422, "validation_failed"),
        ({"email": "{email}", "password": PASSWORD, "remember": True}, 422, "validation_failed"),
        ({"email": "not an email", "password": PASSWORD}, 422, "validation_failed"),
    ],
)
async def test_a_refused_sign_in_has_the_api_error_shape_and_sets_no_cookie(
    browser: httpx.AsyncClient, accounts: Accounts, body: dict[str, Any], status: int, code: str
) -> None:
    email, _ = await accounts.sign_up()
    filled = {
        key: value.format(email=email, n=secrets.token_hex(3)) if isinstance(value, str) else value
        for key, value in body.items()
    }
    response = await browser.post("/ui/session", json=filled)

    assert_error(response, status, code)
    assert "set-cookie" not in response.headers


async def test_malformed_json_is_a_400(browser: httpx.AsyncClient) -> None:
    response = await browser.post("/ui/session", content=b'{"email": ', headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")


async def test_sign_in_failures_are_throttled_per_account_like_the_api(
    browser: httpx.AsyncClient, auth_api: httpx.AsyncClient, accounts: Accounts, ui: UiUnderTest
) -> None:
    email, _ = await accounts.sign_up()
    wrong = {"email": email, "password": "not the password at all"}
    # Failures on the API and on the UI count against the same account.
    for _ in range(ui.settings.signin_max_failures - 1):
        assert (await browser.post("/ui/session", json=wrong)).status_code == 401
    assert (await auth_api.post("/api/auth/signin", json=wrong)).status_code == 401

    refused = await browser.post("/ui/session", json={"email": email, "password": PASSWORD})

    assert_error(refused, 429, "too_many_attempts")
    assert int(refused.headers["retry-after"]) > 0
    assert "set-cookie" not in refused.headers


async def signed_in(browser: httpx.AsyncClient, accounts: Accounts) -> tuple[str, str]:
    """(access token, refresh cookie) of a new account's session in the UI."""
    email, _ = await accounts.sign_up()
    response = await browser.post("/ui/session", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"]), refresh_cookie(response)[0]


async def test_refresh_rotates_the_cookie_and_a_spent_one_is_refused_and_cleared(
    browser: httpx.AsyncClient, auth_api: httpx.AsyncClient, accounts: Accounts, ui: UiUnderTest
) -> None:
    _, first_cookie = await signed_in(browser, accounts)

    # WHEN the page refreshes with the cookie
    refreshed = await browser.post("/ui/session/refresh", headers=with_cookie(first_cookie))

    # THEN it gets a working access token and the cookie rotates
    assert refreshed.status_code == 200, refreshed.text
    assert set(refreshed.json()) == {"access_token", "expires_in", "user"}
    assert (await me(auth_api, refreshed.json()["access_token"])).status_code == 200
    second_cookie, attributes = refresh_cookie(refreshed)
    assert second_cookie != first_cookie
    assert "httponly" in attributes and attributes["max-age"] == str(ui.settings.refresh_token_ttl_seconds)

    # WHEN the spent cookie comes back (a stolen copy, say)
    replayed = await browser.post("/ui/session/refresh", headers=with_cookie(first_cookie))

    # THEN it is refused and cleared, and, as on the API, the reuse ends the whole session
    assert_error(replayed, 401, "refresh_token_reused")
    assert_cookie_cleared(replayed)
    assert (await me(auth_api, refreshed.json()["access_token"])).status_code == 401
    after = await browser.post("/ui/session/refresh", headers=with_cookie(second_cookie))
    assert_error(after, 401, "invalid_refresh_token")
    assert_cookie_cleared(after)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"X-Berth-UI": "1"}, "no_session"),
        (with_cookie("unknown-" + "x" * 40), "invalid_refresh_token"),
        (with_cookie("y" * 5000), "no_session"),
    ],
)
async def test_refresh_without_a_usable_cookie_is_401_and_clears_it(
    browser: httpx.AsyncClient, headers: dict[str, str], code: str
) -> None:
    response = await browser.post("/ui/session/refresh", headers=headers)

    assert_error(response, 401, code)
    assert_cookie_cleared(response)
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("ui_header", [None, "0", "true"])
async def test_refresh_and_sign_out_need_the_ui_header(
    browser: httpx.AsyncClient, auth_api: httpx.AsyncClient, accounts: Accounts, ui_header: str | None
) -> None:
    access_token, cookie = await signed_in(browser, accounts)
    headers = with_cookie(cookie, ui_header=False) | ({"X-Berth-UI": ui_header} if ui_header is not None else {})

    refresh = await browser.post("/ui/session/refresh", headers=headers)
    sign_out = await browser.delete("/ui/session", headers=headers | {"Authorization": f"Bearer {access_token}"})

    for response in (refresh, sign_out):
        assert_error(response, 403, "ui_header_required")
        assert "set-cookie" not in response.headers
        assert_security_headers(response)
    # Nothing happened to the session: the token works, the cookie was not spent.
    assert (await me(auth_api, access_token)).status_code == 200
    assert (await browser.post("/ui/session/refresh", headers=with_cookie(cookie))).status_code == 200


@pytest.mark.parametrize("send_bearer", [True, False])
async def test_sign_out_ends_the_session_and_clears_the_cookie(
    browser: httpx.AsyncClient, auth_api: httpx.AsyncClient, accounts: Accounts, send_bearer: bool
) -> None:
    # GIVEN a session (with or without the access token at hand: after a reload the page has only the cookie)
    access_token, cookie = await signed_in(browser, accounts)
    headers = with_cookie(cookie) | ({"Authorization": f"Bearer {access_token}"} if send_bearer else {})

    response = await browser.delete("/ui/session", headers=headers)

    assert response.status_code == 204 and response.content == b""
    assert_cookie_cleared(response)
    profile = await me(auth_api, access_token)
    assert profile.status_code == 401 and profile.json()["error"]["code"] == "session_revoked"
    assert (await browser.post("/ui/session/refresh", headers=with_cookie(cookie))).status_code == 401


async def test_sign_out_with_only_a_bearer_token_ends_that_session(
    browser: httpx.AsyncClient, auth_api: httpx.AsyncClient, accounts: Accounts
) -> None:
    access_token, cookie = await signed_in(browser, accounts)

    response = await browser.delete(
        "/ui/session", headers={"X-Berth-UI": "1", "Authorization": f"Bearer {access_token}"}
    )

    assert response.status_code == 204
    assert (await me(auth_api, access_token)).status_code == 401
    assert (await browser.post("/ui/session/refresh", headers=with_cookie(cookie))).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Berth-UI": "1"},
        {"X-Berth-UI": "1", "Authorization": "Bearer not-a-token"},
        {"X-Berth-UI": "1", "Authorization": "Basic dXNlcjpwYXNz"},
        with_cookie("spent-or-unknown"),
    ],
)
async def test_sign_out_without_a_session_still_clears_the_cookie(
    browser: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await browser.delete("/ui/session", headers=headers)

    assert response.status_code == 204
    assert_cookie_cleared(response)


@pytest.mark.parametrize(
    ("endpoint", "origin"),
    [
        ("http://storage.example:9000", "http://storage.example:9000"),
        ("https://S3.Example.com", "https://s3.example.com"),
    ],
)
def test_the_policy_lets_the_page_upload_to_where_presigned_uploads_go(
    ui: UiUnderTest, endpoint: str, origin: str
) -> None:
    # GIVEN object storage elsewhere (the images API presigns its uploads there)
    settings = ui.settings.model_copy(update={"aws_endpoint_url": endpoint})
    presigned = get_object_store(settings).presigned_upload("uploads/x", max_bytes=1, expires_in=60)
    assert presigned.url.lower().startswith(origin)
    # WHEN the function starts with those settings
    other = build_app(settings)
    # THEN its policy lets the page connect there, and nowhere else but its own origin
    headers = invoke(UiUnderTest(other, ui.static_dir, settings), "GET", "/ui/")["headers"]
    assert f"connect-src 'self' {origin};" in headers["content-security-policy"]
