"""The ui function: the dashboard's pages and assets under /ui, and its session routes.

- ``GET /ui/assets/<build>/<path>``: a file of the build read at cold start, cached for a year (its URL
  changes with its content); any other build is a 404, so a page never mixes two deploys' files.
- ``GET /ui/...`` (anything else): the index page, revalidated on each load; the app routes by URL hash.
- ``POST /ui/session``, ``POST /ui/session/refresh``, ``DELETE /ui/session``: sign in, refresh and sign
  out with the refresh token in an HttpOnly cookie, so page scripts only ever hold the access token.

Every answer carries the strict Content-Security-Policy and the other headers of ``security_headers``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from functions.auth.models import SignInRequest
from functions.auth.signing_keys import PublishedSigningKeys
from functions.ui import session
from functions.ui.security_headers import SecurityHeadersMiddleware, security_headers, upload_origin
from functions.ui.settings import UiSettings, get_ui_settings
from functions.ui.static_build import Asset, StaticBuild, accepts_gzip, load_static_build
from shared.errors import BerthError, NotFound, Unauthorized, error_body
from shared.http_app import create_app, lambda_handler
from shared.observability import request_id_var
from shared.tokens import TokenVerifier

SERVICE = "ui"
REFRESH_COOKIE = "berth_refresh"
REFRESH_COOKIE_PATH = "/ui/session"
# Cross-site pages cannot send a custom header without a CORS preflight, which the API never allows
# for it; with SameSite=Strict this keeps other sites from using the cookie.
UI_HEADER = "x-berth-ui"
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
INDEX_CACHE_CONTROL = "no-cache"
# Tokens are in these bodies: no cache may keep them.
SESSION_CACHE_CONTROL = "no-store"
MAX_REFRESH_TOKEN_LENGTH = 4096
SESSION_PATHS = ("session", "session/refresh")
READ_METHODS = ["GET", "HEAD"]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class UiHeaderMissing(BerthError):
    status = 403
    code = "ui_header_required"


class SessionUserBody(BaseModel):
    id: str
    email: str
    role: str
    plan: str


class SessionBody(BaseModel):
    access_token: str
    expires_in: int
    user: SessionUserBody


def _settings(request: Request) -> UiSettings:
    settings: UiSettings = request.app.state.settings
    return settings


def _verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier


def _build(request: Request) -> StaticBuild:
    build: StaticBuild = request.app.state.static_build
    return build


def require_ui_header(request: Request) -> None:
    if request.headers.get(UI_HEADER) != "1":
        raise UiHeaderMissing("This route must be called by the Berth UI: send the header 'X-Berth-UI: 1'.")


Settings = Annotated[UiSettings, Depends(_settings)]
Verifier = Annotated[TokenVerifier, Depends(_verifier)]
Build = Annotated[StaticBuild, Depends(_build)]
FromUi = Depends(require_ui_header)

pages = APIRouter(tags=["ui"])
sessions = APIRouter(prefix="/ui/session", tags=["ui"])


# --- sessions ----------------------------------------------------------------------------------------


def _refresh_cookie(request: Request) -> str | None:
    value = request.cookies.get(REFRESH_COOKIE)
    return value if value and len(value) <= MAX_REFRESH_TOKEN_LENGTH else None


def _secure(request: Request) -> bool:
    # Behind a gateway the scheme is the client's (X-Forwarded-Proto), so https always gets Secure.
    return request.url.scheme == "https"


def _set_refresh_cookie(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        token,
        max_age=max_age,
        path=REFRESH_COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def _clear_refresh_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, secure=_secure(request), httponly=True, samesite="strict"
    )


def _session_response(request: Request, opened: session.UiSession, settings: UiSettings) -> JSONResponse:
    body = SessionBody(
        access_token=opened.access_token,
        expires_in=opened.expires_in,
        user=SessionUserBody(id=opened.user.id, email=opened.user.email, role=opened.user.role, plan=opened.user.plan),
    )
    response = JSONResponse(body.model_dump(), headers={"Cache-Control": SESSION_CACHE_CONTROL})
    _set_refresh_cookie(response, request, opened.refresh_token, settings.refresh_token_ttl_seconds)
    return response


@sessions.post("", response_model=SessionBody)
async def open_session(body: SignInRequest, request: Request, settings: Settings, verifier: Verifier) -> JSONResponse:
    opened = await session.open_session(settings, verifier, body.email, body.password)
    return _session_response(request, opened, settings)


@sessions.post("/refresh", response_model=SessionBody, dependencies=[FromUi])
async def refresh_session(request: Request, settings: Settings, verifier: Verifier) -> JSONResponse:
    token = _refresh_cookie(request)
    try:
        if token is None:
            raise Unauthorized("There is no session in this browser; sign in.", code="no_session")
        resumed = await session.resume_session(settings, verifier, token)
    except Unauthorized as exc:
        # The cookie is of no further use: drop it, so the next page load does not try it again.
        request_id = str(getattr(request.state, "request_id", None) or request_id_var.get())
        refused = JSONResponse(error_body(exc.code, exc.message, request_id), exc.status, headers=exc.headers)
        refused.headers["Cache-Control"] = SESSION_CACHE_CONTROL
        _clear_refresh_cookie(refused, request)
        return refused
    return _session_response(request, resumed, settings)


@sessions.delete("", status_code=204, dependencies=[FromUi])
async def close_session(request: Request, settings: Settings, verifier: Verifier) -> Response:
    scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
    access_token = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
    await session.close_session(settings, verifier, access_token=access_token, refresh_token=_refresh_cookie(request))
    response = Response(status_code=204, headers={"Cache-Control": SESSION_CACHE_CONTROL})
    _clear_refresh_cookie(response, request)
    return response


# --- pages and assets --------------------------------------------------------------------------------


def _matches_etag(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match")
    if not wanted:
        return False
    candidates = {candidate.strip().removeprefix("W/") for candidate in wanted.split(",")}
    return "*" in candidates or etag in candidates


def _file_response(request: Request, asset: Asset, cache_control: str) -> Response:
    headers = {"Cache-Control": cache_control, "ETag": asset.etag}
    if asset.gzip_body is not None:
        headers["Vary"] = "Accept-Encoding"
    if _matches_etag(request, asset.etag):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.gzip_body is not None and accepts_gzip(request.headers.get("accept-encoding")):
        body = asset.gzip_body
        headers["Content-Encoding"] = "gzip"
    headers["Content-Length"] = str(len(body))
    # A HEAD answer describes the GET one (same length and headers) without its body.
    payload = b"" if request.method == "HEAD" else body
    return Response(payload, headers=headers, media_type=asset.content_type)


@pages.api_route("/ui", methods=READ_METHODS, include_in_schema=False)
async def ui_root(request: Request) -> Response:
    query = request.url.query
    return Response(status_code=308, headers={"Location": "/ui/" + (f"?{query}" if query else "")})


@pages.api_route("/ui/assets/{build_id}/{path:path}", methods=READ_METHODS, include_in_schema=False)
async def asset(build_id: str, path: str, request: Request, build: Build) -> Response:
    found = build.asset(build_id, path)
    if found is None:
        if build_id != build.build_id:
            raise NotFound(f"Build {build_id} is not served any more; reload the page to get the current one.")
        raise NotFound(f"Build {build_id} has no asset {path}.")
    return _file_response(request, found, ASSET_CACHE_CONTROL)


@pages.api_route("/ui/{path:path}", methods=ALL_METHODS, include_in_schema=False)
async def index(path: str, request: Request, build: Build) -> Response:
    # Every method reaches here, so a wrong one is told what the path allows (not what a namesake route does).
    session_path = path.rstrip("/")
    if session_path in SESSION_PATHS:
        allowed = "POST" if session_path.endswith("refresh") else "POST, DELETE"
        raise StarletteHTTPException(405, headers={"Allow": allowed})
    if request.method not in READ_METHODS:
        raise StarletteHTTPException(405, headers={"Allow": ", ".join(READ_METHODS)})
    if path == "assets" or path.startswith("assets/"):
        raise NotFound(f"No asset at {request.url.path}; assets live at /ui/assets/<build>/<path>.")
    return _file_response(request, build.index, INDEX_CACHE_CONTROL)


def build_app(settings: UiSettings) -> FastAPI:
    """The ui app over the static folder of ``settings``, read now (at cold start), and its sessions."""
    static_build = load_static_build(settings.ui_static_dir)
    ui_app = create_app(SERVICE, [sessions, pages])
    ui_app.state.settings = settings
    ui_app.state.static_build = static_build
    ui_app.state.token_verifier = TokenVerifier(
        PublishedSigningKeys(settings), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    ui_app.add_middleware(SecurityHeadersMiddleware, headers=security_headers(upload_origin(settings)))
    return ui_app


app = build_app(get_ui_settings())
handler = lambda_handler(app)
