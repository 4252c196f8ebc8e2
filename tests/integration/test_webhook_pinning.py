"""Webhook deliveries connect to the address that was checked: a host name that resolves to one address for
the check and another for the connection (DNS rebinding) cannot move the delivery (shared.webhooks)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from shared.webhooks import PinnedWebhookTransport, WebhookUrlRefused

HOOK_HOST = "hooks.rebinding.test"  # .test never resolves for real: the test's resolver answers it


class Receiver:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.hosts.append(self.headers.get("Host", ""))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """HOOK_HOST resolves to 127.0.0.1 once, then to an unroutable documentation address (TEST-NET-3):
    a second lookup by the HTTP client would send the delivery nowhere. Other names resolve as usual."""
    real = socket.getaddrinfo
    answers = ["127.0.0.1"]
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != HOOK_HOST:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = answers.pop(0) if answers else "203.0.113.9"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


async def test_a_delivery_connects_to_the_checked_address_with_the_original_host(
    receiver: Receiver, rebinding_dns: list[str]
) -> None:
    # GIVEN a webhook host whose name changes its answer after the first lookup
    url = f"http://{HOOK_HOST}:{receiver.port}/hook"
    # WHEN a delivery is sent through the pinned transport
    async with httpx.AsyncClient(transport=PinnedWebhookTransport(allow_private=True), timeout=5) as client:
        answer = await client.post(url, content=b"{}")
    # THEN it reached the address that was checked (one lookup), with the webhook's own Host header
    assert answer.status_code == 204
    assert rebinding_dns == [HOOK_HOST]
    assert receiver.hosts == [f"{HOOK_HOST}:{receiver.port}"]


async def test_a_host_resolving_to_a_private_address_is_refused_before_any_connection(
    receiver: Receiver, rebinding_dns: list[str]
) -> None:
    # GIVEN a host name that resolves to loopback, and private targets not allowed
    url = f"http://{HOOK_HOST}:{receiver.port}/hook"
    # WHEN a delivery is attempted, THEN it is refused and nothing reaches the address
    async with httpx.AsyncClient(transport=PinnedWebhookTransport(allow_private=False), timeout=5) as client:
        with pytest.raises(WebhookUrlRefused, match="loopback"):
            await client.post(url, content=b"{}")
    assert receiver.hosts == []


async def test_a_name_that_does_not_resolve_is_a_connect_error_to_retry() -> None:
    async with httpx.AsyncClient(transport=PinnedWebhookTransport(allow_private=True), timeout=5) as client:
        with pytest.raises(httpx.ConnectError, match="does not resolve"):
            await client.post("http://nothing-here.invalid/hook", content=b"{}")
