"""Per-plan API rate limits: the figure of the caller's plan (``plans.api_requests_per_minute``), read by the
access token's ``plan`` claim from a small TTL cache of the plans table.

How they combine with the OpenAPI document's limits (``x-berth-throttling``): the document's per-user limit
of a route (or the operator's override of it) is the default and the ceiling. For a caller whose plan has a
figure P (requests per minute), the route's per-user limit L over a window of W seconds becomes
``min(L, max(1, P * W // 60))``, counted in the same bucket (same Redis key) either way. A plan without a
figure, an unknown plan, or a plans table that cannot be read leaves L unchanged: the ceiling still holds.

The gateway and the functions' own limiter (``shared.throttling``) both use ``per_user_limit``, so a request
is counted once with the same limit whichever of them counts it. A plan change reaches a user with their next
token (the claim), and an admin's edit of the figure within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time

from shared.db import get_database
from shared.errors import DependencyError
from shared.observability import get_logger

logger = get_logger("rate-limit")

CACHE_SECONDS = 30.0


def scaled_limit(route_limit: int, window_seconds: int, per_minute: int | None) -> int:
    """The per-user limit of a route (``route_limit`` per ``window_seconds``) for a plan allowing
    ``per_minute`` requests a minute: never above the route's own limit."""
    if per_minute is None:
        return route_limit
    return min(route_limit, max(1, per_minute * window_seconds // 60))


class PlanRateLimits:
    """Each plan's requests per minute, read whole from the plans table at most every ``ttl_seconds``."""

    def __init__(self, database_url: str, ttl_seconds: float = CACHE_SECONDS) -> None:
        self._url = database_url
        self._ttl = ttl_seconds
        self._figures: dict[str, int | None] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def per_minute(self, plan: str | None) -> int | None:
        """The plan's requests per minute, or None (the document's limits apply)."""
        if not plan:
            return None
        if time.monotonic() - self._read_at > self._ttl:
            async with self._lock:
                if time.monotonic() - self._read_at > self._ttl:
                    await self._refresh()
        return self._figures.get(plan)

    async def _refresh(self) -> None:
        try:
            rows = await get_database(self._url).fetch_all("SELECT name, api_requests_per_minute FROM plans")
        except DependencyError:
            # Keep what was known (or nothing: the document's limits); try again after a short pause.
            logger.warning("plans table unreadable: per-plan rate limits fall back to the document's")
            self._read_at = time.monotonic() - self._ttl + 1.0
            return
        self._figures = {str(row["name"]): row["api_requests_per_minute"] for row in rows}
        self._read_at = time.monotonic()

    async def per_user_limit(self, plan: str | None, route_limit: int, window_seconds: int) -> int:
        """The route's per-user limit for a caller on ``plan`` (see the module's docstring)."""
        return scaled_limit(route_limit, window_seconds, await self.per_minute(plan))


_caches: dict[tuple[int, str], PlanRateLimits] = {}


def get_plan_rate_limits(database_url: str) -> PlanRateLimits:
    """The process's cache for ``database_url`` on the running event loop (a cached factory)."""
    key = (id(asyncio.get_running_loop()), database_url)
    cache = _caches.get(key)
    if cache is None:
        cache = _caches[key] = PlanRateLimits(database_url)
    return cache
