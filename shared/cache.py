"""Redis access with the process's key prefix, so tests and several stacks can share one server."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis


class KeySpace:
    """Builds namespaced Redis keys: ``KeySpace("berth:").key("ratelimit", "ip", "1.2.3.4")``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)


_clients: dict[tuple[int, str], redis.Redis] = {}


def get_redis(url: str) -> redis.Redis:
    """The process's Redis client for ``url`` on the running event loop (a cached factory)."""
    key = (id(asyncio.get_running_loop()), url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
        )
    return client
