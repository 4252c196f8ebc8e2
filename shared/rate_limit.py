"""Rate limits counted atomically in Redis: every bucket of a request checked and consumed at once.

Shared by the local gateway and the functions' own limiter (``shared.throttling``), with the same keys,
so a request counted by either counts against the same buckets.

A request may fall in several buckets (its client IP, its user). One Lua script checks them all and,
only if every one has room, consumes one unit from each: a rejected request consumes nothing, and with
limit L exactly L of any number of concurrent requests pass. Each bucket is a fixed window that opens
with its first request (a counter with a ``PEXPIRE``), which is what the ``RateLimit-*`` headers report.

When Redis cannot be reached the limiter fails closed (``RateLimiterUnavailable``, a 503): an
unprotected API during a Redis outage is worse than a short refusal.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from shared.cache import KeySpace
from shared.errors import RateLimited, ServiceUnavailable

# The mark the local gateway puts in an event's ``requestContext`` when it counted the request, so the
# function behind it does not count it again (``shared.throttling``). Only the gateway writes the request
# context; a client cannot set it.
GATEWAY_COUNTED_KEY = "berthRateLimitsCounted"

# KEYS: one per bucket. ARGV: limit and window (ms) per bucket, in KEYS order.
# Returns {allowed (1|0), blocking bucket index (1-based, 0 if none), then count and ttl_ms per bucket}.
_CHECK_AND_CONSUME = """
local n = #KEYS
local counts = {}
local ttls = {}
local fresh = {}
local blocking = 0
for i = 1, n do
  local limit = tonumber(ARGV[2 * i - 1])
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  local ttl = redis.call('PTTL', KEYS[i])
  -- no key (-2) opens a new window; a key without expiry (-1) must not live forever: restart its window
  fresh[i] = ttl < 0
  if ttl == -2 then count = 0 end
  if ttl < 0 then ttl = tonumber(ARGV[2 * i]) end
  counts[i] = count
  ttls[i] = ttl
  if blocking == 0 and count + 1 > limit then blocking = i end
end
local reply = {blocking == 0 and 1 or 0, blocking}
for i = 1, n do
  if blocking == 0 then
    counts[i] = redis.call('INCR', KEYS[i])
    if fresh[i] then redis.call('PEXPIRE', KEYS[i], ARGV[2 * i]) end
  end
  reply[#reply + 1] = counts[i]
  reply[#reply + 1] = ttls[i]
end
return reply
"""


class RateLimiterUnavailable(ServiceUnavailable):
    code = "rate_limiter_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": "1"}


@dataclass(frozen=True)
class Bucket:
    """``limit`` requests per ``window_seconds`` for one identity (an IP, a user) in one scope."""

    kind: str  # "ip" or "user"
    identity: str
    limit: int
    window_seconds: int
    scope: str = "*"

    def key(self, keys: KeySpace) -> str:
        return keys.key("ratelimit", self.kind, self.scope, self.identity)

    @property
    def policy(self) -> str:
        return f"{self.limit};w={self.window_seconds}"


@dataclass(frozen=True)
class BucketState:
    bucket: Bucket
    remaining: int
    reset_seconds: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    states: tuple[BucketState, ...]
    blocking: BucketState | None = None

    @property
    def tightest(self) -> BucketState | None:
        """The bucket the ``RateLimit-*`` headers describe: least remaining, then latest reset."""
        if self.blocking is not None:
            return self.blocking
        if not self.states:
            return None
        return min(self.states, key=lambda state: (state.remaining, -state.reset_seconds))

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit/-Remaining/-Reset/-Policy`` (IETF draft), plus ``Retry-After`` on refusal."""
        state = self.tightest
        if state is None:
            return {}
        headers = {
            "RateLimit-Limit": str(state.bucket.limit),
            "RateLimit-Remaining": str(state.remaining),
            "RateLimit-Reset": str(state.reset_seconds),
            "RateLimit-Policy": ", ".join(s.bucket.policy for s in self.states),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, state.reset_seconds))
        return headers

    def raise_if_refused(self) -> None:
        if self.allowed or self.blocking is None:
            return
        error = RateLimited(
            f"Too many requests ({self.blocking.bucket.limit} per "
            f"{self.blocking.bucket.window_seconds} s per {self.blocking.bucket.kind}); "
            f"retry in {self.blocking.reset_seconds} s.",
            retry_after=self.blocking.reset_seconds,
        )
        error.headers.update(self.headers())
        raise error


class RateLimiter:
    """Checks and consumes a request's buckets in one atomic Redis script call."""

    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self._client = client
        self._keys = keys
        self._sha = hashlib.sha1(_CHECK_AND_CONSUME.encode(), usedforsecurity=False).hexdigest()

    async def hit(self, buckets: Sequence[Bucket]) -> Decision:
        """Consume one unit from every bucket if all have room; otherwise consume nothing."""
        if not buckets:
            return Decision(True, ())
        arguments: list[int] = []
        for bucket in buckets:
            arguments += [bucket.limit, bucket.window_seconds * 1000]
        keys = [bucket.key(self._keys) for bucket in buckets]
        try:
            try:
                reply = await self._client.evalsha(self._sha, len(keys), *keys, *arguments)
            except NoScriptError:
                # First use on this server (or after a restart / SCRIPT FLUSH): load, then run.
                self._sha = await self._client.script_load(_CHECK_AND_CONSUME)
                reply = await self._client.evalsha(self._sha, len(keys), *keys, *arguments)
        except (RedisError, OSError) as exc:
            raise RateLimiterUnavailable(
                "Rate limiting is unavailable (Redis cannot be reached), so the "
                "API refuses requests for now; try again shortly."
            ) from exc
        allowed, blocking_index = bool(reply[0]), int(reply[1])
        states = tuple(
            BucketState(
                bucket,
                remaining=max(0, bucket.limit - int(reply[2 + 2 * i])),
                reset_seconds=max(1, math.ceil(int(reply[3 + 2 * i]) / 1000)),
            )
            for i, bucket in enumerate(buckets)
        )
        blocking = states[blocking_index - 1] if blocking_index else None
        return Decision(allowed, states, blocking)
