"""The headers every /ui answer carries: a strict Content-Security-Policy and the anti-sniffing,
anti-framing and no-referrer headers.

The page may load scripts, styles, images and fonts from its own origin only, with no inline code, and
may talk to its own origin (the API and the session routes) plus object storage, where the browser
POSTs image archives with the presigned form the images API hands out.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.config import FunctionSettings
from shared.observability import get_logger
from shared.storage import get_object_store

logger = get_logger("ui")

# scheme://host[:port] and nothing else: the value is spliced into a header, so no spaces, quotes or ';'.
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_UPLOAD_PROBE_KEY = "uploads/ui-origin-probe"


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, or None when it has no such origin."""
    parts = urlsplit(url)
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    return origin if _ORIGIN.match(origin) else None


def upload_origin(settings: FunctionSettings) -> str | None:
    """The origin of the presigned upload URLs the images API gives out: presigning a form is local
    (a signature, no network call), so this reads the same storage settings the images function uses."""
    try:
        upload = get_object_store(settings).presigned_upload(_UPLOAD_PROBE_KEY, max_bytes=1, expires_in=60)
    except Exception:  # no credentials, say: the page still works, uploads are refused by the browser
        logger.warning("no upload origin: the presigned upload URL could not be made")
        return None
    origin = origin_of(upload.url)
    if origin is None:
        logger.warning("no upload origin: the presigned upload URL is not an http(s) URL")
    return origin


def content_security_policy(upload: str | None) -> str:
    connect = "'self'" + (f" {upload}" if upload else "")
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(upload: str | None) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(upload),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


class SecurityHeadersMiddleware:
    """Adds ``headers`` to every answer (pages, assets, session routes and errors alike)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        self._names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(name, value) for name, value in message.get("headers", []) if name not in self._names]
                message["headers"] = kept + self.headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
