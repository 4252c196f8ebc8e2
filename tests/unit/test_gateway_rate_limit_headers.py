"""What a rate-limit decision tells the client: RateLimit-* headers, Retry-After and the 429."""

from __future__ import annotations

import pytest

from gateway.rate_limit import Bucket, BucketState, Decision
from shared.errors import RateLimited

IP = Bucket("ip", "127.0.0.1", 600, 60)
USER = Bucket("user", "u1", 300, 60)


def test_headers_describe_the_tightest_bucket_and_list_every_policy() -> None:
    decision = Decision(
        True, (BucketState(IP, remaining=590, reset_seconds=40), BucketState(USER, remaining=12, reset_seconds=30))
    )
    assert decision.headers() == {
        "RateLimit-Limit": "300",
        "RateLimit-Remaining": "12",
        "RateLimit-Reset": "30",
        "RateLimit-Policy": "600;w=60, 300;w=60",
    }
    decision.raise_if_refused()  # allowed: nothing raised


def test_a_refusal_is_a_429_naming_the_blocking_bucket_with_retry_after() -> None:
    blocking = BucketState(IP, remaining=0, reset_seconds=17)
    decision = Decision(False, (blocking, BucketState(USER, remaining=200, reset_seconds=50)), blocking)
    with pytest.raises(RateLimited) as caught:
        decision.raise_if_refused()
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "17"
    assert caught.value.headers["RateLimit-Remaining"] == "0"
    assert caught.value.headers["RateLimit-Limit"] == "600"
    assert "per ip" in caught.value.message


def test_no_buckets_means_no_headers() -> None:
    assert Decision(True, ()).headers() == {}
