"""The gateway's rate limiter: ``shared.rate_limit``, which the functions use too (same buckets, same keys)."""

from __future__ import annotations

from shared.rate_limit import Bucket, BucketState, Decision, RateLimiter, RateLimiterUnavailable

__all__ = ["Bucket", "BucketState", "Decision", "RateLimiter", "RateLimiterUnavailable"]
