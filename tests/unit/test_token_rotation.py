"""Publish-before-use key rotation as a verifier sees it: ``JwksKeySource`` and ``TokenVerifier`` over a
fake JWKS, on a fake clock.

A verifier caches the JWKS for a TTL and re-reads it for an unknown kid at most once per
``UNKNOWN_KID_REFRESH_SECONDS``, so anyone sending garbage kids can keep that re-read busy. A key that
signs the moment it is published is then refused until the cache expires; a key published longer than
the TTL before it signs is in every verifier's cache when the first token names it.
"""

from __future__ import annotations

import time
import types
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import ValidationError

import shared.tokens
from gateway.authorizer import JWKS_CACHE_SECONDS
from shared.config import FunctionSettings
from shared.errors import Unauthorized
from shared.tokens import (
    UNKNOWN_KID_REFRESH_SECONDS,
    JwksKeySource,
    TokenVerifier,
    generate_rsa_key,
    issue_access_token,
    public_jwk,
)

ISSUER = "https://berth.example/api/auth"
AUDIENCE = "berth-api"
DELAY = FunctionSettings().key_activation_delay_seconds


class Clock:
    """The verifier's ``time.monotonic``, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Issuer:
    """The auth function's key table reduced to what verifiers see: the published keys."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.fetches = 0

    def publish(self, private_key: RSAPrivateKey, kid: str) -> None:
        self.published.insert(0, public_jwk(private_key, kid))

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        return {"keys": list(self.published)}


class RecordingKeySource(JwksKeySource):
    """The gateway's key source, noting each unknown-kid refresh it was asked for."""

    def __init__(self, issuer: Issuer) -> None:
        super().__init__(issuer.fetch, JWKS_CACHE_SECONDS)
        self.refreshes = 0

    async def public_keys(self, *, refresh: bool = False) -> dict[str, dict[str, Any]]:
        self.refreshes += int(refresh)
        return await super().public_keys(refresh=refresh)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(shared.tokens, "time", types.SimpleNamespace(monotonic=fake.monotonic, time=time.time))
    return fake


@pytest.fixture(scope="module")
def keys() -> dict[str, RSAPrivateKey]:
    return {"old": generate_rsa_key(), "new": generate_rsa_key()}


def token(private_key: RSAPrivateKey, kid: str) -> str:
    return issue_access_token(
        private_key,
        kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl_seconds=900,
        subject="user-1",
        email="ada@example.com",
        role="user",
        plan="free",
        session_id="session-1",
    )


async def keep_the_refresh_busy(verifier: TokenVerifier) -> None:
    """What an attacker does: a token naming a kid nobody published (refused, and it spends the re-read)."""
    with pytest.raises(Unauthorized) as refused:
        await verifier.verify(token(generate_rsa_key(), "garbage-kid"))
    assert refused.value.code == "invalid_token"


def test_keys_activate_after_the_gateway_cache_expires() -> None:
    assert DELAY > JWKS_CACHE_SECONDS
    assert FunctionSettings(key_activation_delay_seconds=0).key_activation_delay_seconds == 0
    with pytest.raises(ValidationError):
        FunctionSettings(key_activation_delay_seconds=-1)


@pytest.mark.parametrize("traffic_between", [True, False], ids=["busy verifier", "idle verifier"])
async def test_a_key_published_before_it_signs_is_known_without_any_unknown_kid_refresh(
    clock: Clock, keys: dict[str, RSAPrivateKey], traffic_between: bool
) -> None:
    issuer = Issuer()
    issuer.publish(keys["old"], "old")
    source = RecordingKeySource(issuer)
    verifier = TokenVerifier(source, issuer=ISSUER, audience=AUDIENCE)
    old_token = token(keys["old"], "old")
    # The worst case: the verifier reads the JWKS the instant before the rotation publishes the new key.
    await verifier.verify(old_token)

    clock.now += 0.001
    issuer.publish(keys["new"], "new")  # rotate: published now, signs DELAY seconds later
    activation = clock.now + DELAY
    if traffic_between:
        while clock.now < activation - 1:
            clock.now += 20
            await verifier.verify(old_token)
            await keep_the_refresh_busy(verifier)
    clock.now = activation - 1
    await keep_the_refresh_busy(verifier)  # the unknown-kid re-read is throttled at the activation
    clock.now = activation
    refreshes = source.refreshes

    claims = await verifier.verify(token(keys["new"], "new"))

    assert claims["sub"] == "user-1"
    assert source.refreshes == refreshes  # found among the cached keys: no re-read was asked for
    assert (await verifier.verify(old_token))["sub"] == "user-1"  # the old key's tokens still work


async def test_a_key_that_signs_as_soon_as_it_is_published_is_refused_while_the_refresh_is_busy(
    clock: Clock, keys: dict[str, RSAPrivateKey]
) -> None:
    """Why rotations wait (and what ``berth rotate-keys --now`` risks): the flake this design removes."""
    issuer = Issuer()
    issuer.publish(keys["old"], "old")
    verifier = TokenVerifier(RecordingKeySource(issuer), issuer=ISSUER, audience=AUDIENCE)
    await verifier.verify(token(keys["old"], "old"))
    clock.now += UNKNOWN_KID_REFRESH_SECONDS + 1
    await keep_the_refresh_busy(verifier)  # re-reads now (old key only), and may not again for a while

    issuer.publish(keys["new"], "new")  # rotate immediately: signs at once
    clock.now += 1
    with pytest.raises(Unauthorized) as refused:
        await verifier.verify(token(keys["new"], "new"))
    assert refused.value.code == "invalid_token"

    # Only once the throttle lets the verifier re-read (or its cache expires) is the key known.
    clock.now += UNKNOWN_KID_REFRESH_SECONDS
    assert (await verifier.verify(token(keys["new"], "new")))["sub"] == "user-1"
