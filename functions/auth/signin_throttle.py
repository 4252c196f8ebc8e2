"""Sign-in throttling per account: too many failures in a window lock the email out until it passes.

Counted in Redis per normalised email, for unknown emails too, so a 429 reveals nothing about which
accounts exist. An attempt is counted *before* its password is checked (and the count cleared on
success): concurrent guesses cannot all slip under the limit between a check and an increment.
"""

from __future__ import annotations

import hashlib

from functions.auth.errors import TooManyAttempts
from shared.cache import KeySpace, get_redis
from shared.config import FunctionSettings

# INCR the counter; the first attempt of a window starts its clock. Returns {count, seconds left}.
_COUNT_ATTEMPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


def attempts_key(settings: FunctionSettings, email: str) -> str:
    # Hashed, so Redis holds no email addresses.
    digest = hashlib.sha256(email.encode()).hexdigest()[:32]
    return KeySpace(settings.redis_prefix).key("signin-attempts", digest)


async def count_signin_attempt(settings: FunctionSettings, email: str) -> None:
    """Count an attempt on ``email``; raise ``TooManyAttempts`` when the window's failures are used up."""
    redis = get_redis(settings.redis_url)
    count, seconds_left = await redis.eval(
        _COUNT_ATTEMPT, 1, attempts_key(settings, email), settings.signin_failure_window_seconds
    )
    if int(count) > settings.signin_max_failures:
        raise TooManyAttempts(
            "Too many failed sign-in attempts for this account; try again later.", retry_after=int(seconds_left)
        )


async def clear_signin_attempts(settings: FunctionSettings, email: str) -> None:
    """Forget the counted attempts on ``email`` (after a successful sign-in)."""
    await get_redis(settings.redis_url).delete(attempts_key(settings, email))
