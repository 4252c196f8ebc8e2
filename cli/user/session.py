"""Where the CLI keeps its credentials and how it calls the API with them.

Config: ``$XDG_CONFIG_HOME/berth/config.json`` (``~/.config/berth/config.json``), written with mode 0600
in a 0700 directory. It holds the API URL and either a refresh token (``berth login`` with a password; the
access token it yields is cached there too, until it expires) or a personal access token (``berth login
--token``). ``BERTH_API`` and ``BERTH_TOKEN`` override the file, so a CI job needs no file at all.

Refresh tokens rotate on use, so the new one is written back at once; two commands refreshing at the same
moment would make the second look like a reuse, which is why the access token is cached and a refresh
happens only when it is about to expire.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:8080"
# Refresh this long before the cached access token expires.
EXPIRY_MARGIN_SECONDS = 30


class ExitCode:
    """What ``berth`` exits with; documented in docs/cli.md (scripts may rely on these)."""

    OK = 0
    ERROR = 1  # anything not below
    USAGE = 2  # bad arguments (argparse) or a bad local file
    UNAUTHENTICATED = 3  # not logged in, or the token is expired/revoked (HTTP 401)
    FORBIDDEN = 4  # the token lacks the scope, or the user the role (HTTP 403)
    NOT_FOUND = 5  # HTTP 404
    CONFLICT = 6  # HTTP 409 (e.g. a name or port taken, a container being deleted)
    INVALID = 7  # the API refused the input (HTTP 400, 413, 422)
    RATE_LIMITED = 8  # HTTP 429; retry after a while
    UNAVAILABLE = 9  # the API is unreachable or failed (HTTP 5xx)
    TIMEOUT = 10  # a wait (image processing, containers starting) did not finish in time
    FAILED = 11  # what was waited for ended badly (image rejected, container failed, release not healthy)
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODE_TABLE = [
    (ExitCode.OK, "success"),
    (ExitCode.ERROR, "any other error"),
    (ExitCode.USAGE, "bad arguments, or a local file that cannot be used"),
    (ExitCode.UNAUTHENTICATED, "not logged in, or the token is expired or revoked (HTTP 401)"),
    (ExitCode.FORBIDDEN, "the token lacks the scope or the user the role (HTTP 403)"),
    (ExitCode.NOT_FOUND, "no such resource (HTTP 404)"),
    (ExitCode.CONFLICT, "a conflict: name or port taken, resource busy (HTTP 409)"),
    (ExitCode.INVALID, "the API refused the input (HTTP 400, 413, 422)"),
    (ExitCode.RATE_LIMITED, "rate limited (HTTP 429); retry later"),
    (ExitCode.UNAVAILABLE, "the API is unreachable or failed (HTTP 5xx)"),
    (ExitCode.TIMEOUT, "a wait did not finish in time"),
    (ExitCode.FAILED, "what was waited for failed (image rejected, container failed, release failed or rolled back)"),
    (ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"),
]

_BY_STATUS = {
    401: ExitCode.UNAUTHENTICATED,
    403: ExitCode.FORBIDDEN,
    404: ExitCode.NOT_FOUND,
    409: ExitCode.CONFLICT,
    400: ExitCode.INVALID,
    413: ExitCode.INVALID,
    422: ExitCode.INVALID,
    429: ExitCode.RATE_LIMITED,
}


class CliError(Exception):
    """A failure to report on stderr, with the exit code it maps to."""

    def __init__(self, message: str, exit_code: int = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(CliError):
    def __init__(self, status: int, code: str, message: str, request_id: str | None) -> None:
        exit_code = _BY_STATUS.get(status, ExitCode.UNAVAILABLE if status >= 500 else ExitCode.ERROR)
        suffix = f" ({code}, HTTP {status}" + (f", request {request_id})" if request_id else ")")
        super().__init__(message + suffix, exit_code)
        self.status = status
        self.code = code


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "berth"


def config_path() -> Path:
    return config_dir() / "config.json"


@dataclass
class Credentials:
    """What ``config.json`` holds."""

    api: str = DEFAULT_API
    email: str | None = None
    refresh_token: str | None = None
    token: str | None = None  # a personal access token
    access_token: str | None = None  # cached, from the refresh token
    access_expires_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Credentials:
        path = config_path()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {path}: {exc}; fix or delete it", ExitCode.USAGE) from exc
        known = {k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(**known, extra=data)

    def save(self) -> None:
        directory = config_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = config_path()
        data = {k: v for k, v in self.__dict__.items() if k != "extra" and v not in (None, 0.0)}
        data.update(self.extra)
        temporary = path.with_suffix(".tmp")
        # Created 0600 from the start: the secret is never readable by others, not even for a moment.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            json.dump(data, stream, indent=2)
        os.chmod(temporary, 0o600)
        temporary.replace(path)

    def forget(self) -> None:
        self.email = self.refresh_token = self.token = self.access_token = None
        self.access_expires_at = 0.0


def _error_of(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, str(error["code"]), str(error["message"]), error.get("request_id"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", f"HTTP {response.status_code}: {response.text[:200]}", None)


class Api:
    """The public API with the user's credentials: ``BERTH_TOKEN`` > ``--token`` > the config file."""

    def __init__(self, api: str | None = None, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.credentials = Credentials.load()
        self.base_url = (api or os.environ.get("BERTH_API") or self.credentials.api or DEFAULT_API).rstrip("/")
        self._explicit_token = token or os.environ.get("BERTH_TOKEN") or None
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- credentials -------------------------------------------------------------------------------

    def bearer(self) -> str:
        """The token to send, refreshing the cached access token when needed."""
        if self._explicit_token:
            return self._explicit_token
        creds = self.credentials
        if creds.token:
            return creds.token
        if not creds.refresh_token:
            raise CliError("not logged in: run `berth login` (or set BERTH_TOKEN)", ExitCode.UNAUTHENTICATED)
        if creds.access_token and creds.access_expires_at - EXPIRY_MARGIN_SECONDS > time.time():
            return creds.access_token
        response = self._send("POST", "/api/auth/refresh", json={"refresh_token": creds.refresh_token})
        if response.status_code != 200:
            creds.forget()
            creds.save()
            raise CliError("the session has ended: run `berth login` again", ExitCode.UNAUTHENTICATED)
        self.store_session(response.json())
        assert creds.access_token is not None
        return creds.access_token

    def store_session(self, tokens: dict[str, Any]) -> None:
        creds = self.credentials
        creds.refresh_token = tokens["refresh_token"]
        creds.access_token = tokens["access_token"]
        creds.access_expires_at = time.time() + float(tokens.get("expires_in", 0))
        creds.token = None
        creds.save()

    # --- requests ----------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.base_url}: {exc}", ExitCode.UNAVAILABLE) from exc

    def call(self, method: str, path: str, *, auth: bool = True, expect: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """The JSON answer of ``method path`` (None for 204); ``ApiError`` for any 4xx/5xx."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if auth:
            headers["Authorization"] = f"Bearer {self.bearer()}"
        response = self._send(method, path, headers=headers, **kwargs)
        if response.status_code >= 400 or (expect and response.status_code not in expect):
            raise _error_of(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.call("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.call("DELETE", path, **kwargs)

    def items(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a paginated list, following ``next_cursor``."""
        collected: list[dict[str, Any]] = []
        query = dict(params or {})
        while True:
            page = self.get(path, params=query)
            collected.extend(page.get("items", []))
            cursor = page.get("next_cursor")
            if not cursor:
                return collected
            query["cursor"] = cursor
