"""Alert webhooks: which URLs may receive them, and how a notification is signed and verified.

Signing: every delivery carries ``X-Berth-Timestamp`` (Unix seconds of the attempt) and
``X-Berth-Signature: v1=<hex>``, where hex is ``HMAC-SHA256(secret, timestamp + "." + body)`` over the
exact body bytes. A receiver recomputes it with the secret it gave Berth, compares in constant time and
refuses a timestamp older (or newer) than its replay window: ``verify_signature`` below is that check, and
docs/ALERTS.md shows it as a snippet with no Berth dependency.

URLs: http or https only, no credentials in them, and the host name - every address it resolves to - may
not be loopback, link-local, private, shared, multicast, reserved or unspecified, unless the operator
allows private webhook targets (``BERTH_ALERTS_ALLOW_PRIVATE_WEBHOOKS``: the local stack and tests do).
The check runs when a webhook is created and again before each delivery (DNS may have changed), and a
delivery connects to the very address that was checked (``PinnedWebhookTransport``: no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from urllib.parse import urlsplit

import httpx

SIGNATURE_HEADER = "X-Berth-Signature"
TIMESTAMP_HEADER = "X-Berth-Timestamp"
DELIVERY_HEADER = "X-Berth-Delivery"
SIGNATURE_VERSION = "v1"
# How far a receiver should accept a timestamp from its own clock (both ways).
DEFAULT_REPLAY_WINDOW_SECONDS = 300


class WebhookUrlRefused(ValueError):
    """The URL may not receive webhooks; the message says why, for the caller."""


class WebhookHostUnresolved(WebhookUrlRefused):
    """The URL's host name does not resolve (refused when a webhook is created, retried when delivering)."""


def sign_payload(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Berth-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str, body: bytes, delivery_id: str, now: float | None = None) -> dict[str, str]:
    """The headers of one delivery attempt: timestamp, signature and delivery id."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_payload(secret, timestamp, body),
        DELIVERY_HEADER: delivery_id,
    }


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance_seconds: int = DEFAULT_REPLAY_WINDOW_SECONDS,
) -> bool:
    """True when ``signature`` signs ``body`` at ``timestamp`` with ``secret`` and the timestamp is within
    ``tolerance_seconds`` of ``now``: a receiver's whole check (a replayed old delivery fails the window, a
    tampered body or timestamp fails the HMAC)."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign_payload(secret, int(timestamp), body), signature.strip())


def _address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


_SHARED = ipaddress.ip_network("100.64.0.0/10")


def _checked_target(url: str) -> tuple[str, int]:
    """The host and port of a well-formed webhook URL; ``WebhookUrlRefused`` says what is wrong with it."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a malformed IPv6 literal, a host that normalises to a delimiter
        raise WebhookUrlRefused(f"The webhook URL is not a URL ({exc}).") from exc
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlRefused("The webhook URL must start with http:// or https://.")
    if parts.username or parts.password:
        raise WebhookUrlRefused("The webhook URL may not carry credentials; sign with the secret instead.")
    host = parts.hostname
    if not host:
        raise WebhookUrlRefused("The webhook URL has no host.")
    try:
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefused("The webhook URL's port is not a number from 1 to 65535.") from exc
    if port == 0:
        raise WebhookUrlRefused("The webhook URL's port is not a number from 1 to 65535.")
    return host, port or (443 if parts.scheme == "https" else 80)


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Refuse (``WebhookUrlRefused``) a URL that may not receive webhooks; resolves its host name."""
    _checked_target(url)
    if not allow_private:
        resolve_webhook_addresses(url, allow_private=False)


def resolve_webhook_addresses(url: str, *, allow_private: bool) -> list[str]:
    """Every address ``url``'s host resolves to, each one checked (unless private ones are allowed): the
    addresses a delivery may connect to. ``WebhookHostUnresolved`` when the name does not resolve (now)."""
    host, port = _checked_target(url)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookHostUnresolved(f"The webhook host {host!r} does not resolve.") from exc
    addresses: list[str] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        refusal = None if allow_private else _address_refusal(address)
        if refusal is not None:
            raise WebhookUrlRefused(
                f"The webhook host {host!r} resolves to {refusal} ({address}); webhooks go to public addresses "
                "only unless the operator allows private ones (BERTH_ALERTS_ALLOW_PRIVATE_WEBHOOKS)."
            )
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise WebhookHostUnresolved(f"The webhook host {host!r} does not resolve.")
    return addresses


class PinnedWebhookTransport(httpx.AsyncBaseTransport):
    """An httpx transport for webhook deliveries that connects to the address it just checked.

    Checking a host name and then letting the HTTP client resolve it again leaves a gap: a name that answers
    a public address to the check and a private one to the connection (DNS rebinding) would reach the
    private one. Here each request's host is resolved once and checked (``resolve_webhook_addresses``), and
    the connection goes to the first checked address, with the original ``Host`` header and TLS server name
    (SNI, and the certificate is verified for the host name, not the address). A refused address raises
    ``WebhookUrlRefused``; a name that does not resolve is an ``httpx.ConnectError`` (worth a retry)."""

    def __init__(self, *, allow_private: bool, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to its host's checked address."""
        try:
            # Resolving blocks: off the event loop.
            addresses = await asyncio.to_thread(
                resolve_webhook_addresses, str(request.url), allow_private=self._allow_private
            )
        except WebhookHostUnresolved as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        server_name = request.url.raw_host.decode("ascii")
        # httpx set the Host header from the original URL when it built the request; it stays as it is.
        request.url = request.url.copy_with(host=addresses[0])
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": server_name}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the connections of the wrapped transport."""
        await self._inner.aclose()
