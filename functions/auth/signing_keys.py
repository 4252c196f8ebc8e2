"""RS256 signing keys: the one that signs, rotation without logging anyone out, and the published JWKS.

Keys live in PostgreSQL with the private half encrypted (Fernet, with a key derived from
``settings.secret_key`` by HKDF-SHA256). Rotation is publish-before-use: a new key is in the JWKS at
once but signs only from its ``activates_at``, ``settings.key_activation_delay_seconds`` later (longer
than verifiers cache the JWKS), so every verifier already has it when the first token names it, and
none depends on its throttled re-read for unknown kids. The newest key whose ``activates_at`` has
passed signs; ``immediately=True`` (a compromised key) and the very first key skip the wait. A key
superseded by a newer one's activation stays in the JWKS for ``retired_key_lifetime_seconds`` after
that (long enough for every token it signed to expire, including tokens signed by instances that
still had it cached), then is pruned. Each process caches the signing key and its own verifier's keys
for ``settings.key_cache_seconds`` (the signing key never past the next activation it knows of); the
published JWKS route reads the table (nearly) every time.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from functions.auth.store import ActiveSigningKey, SigningKeyRecord, get_auth_store
from shared.config import FunctionSettings, get_function_settings
from shared.observability import get_logger, log_event
from shared.secrets import derived_fernet
from shared.tokens import generate_rsa_key, public_jwk

# Beyond the access-token lifetime and the key cache, how long a retired key stays published.
RETIREMENT_MARGIN_SECONDS = 60
# A verifier that meets an unknown kid re-reads the table at most this often.
UNKNOWN_KID_REREAD_SECONDS = 1.0
# The JWKS route answers from a copy at most this old: verifiers cache it themselves, and a key another
# instance has just started signing with must be visible to them when they re-read for its kid.
JWKS_ROUTE_MAX_AGE_SECONDS = 1.0
_HKDF_SALT = b"berth signing keys"
_HKDF_INFO = b"berth signing key encryption v1"

logger = get_logger("auth", get_function_settings().log_level)


class SigningKeyUnreadable(RuntimeError):
    """A stored private key cannot be decrypted: BERTH_SECRET_KEY differs from the one that wrote it."""


@dataclass(frozen=True)
class _CachedSigningKey:
    kid: str
    private_key: RSAPrivateKey
    valid_until: float  # time.monotonic(): the cache lifetime, cut short by the next known activation


@dataclass(frozen=True)
class _CachedJwks:
    document: dict[str, Any]
    loaded_at: float


# Per database, so tests and several stacks in one process do not share keys.
_signing_keys: dict[str, _CachedSigningKey] = {}
_published: dict[str, _CachedJwks] = {}


def retired_key_lifetime_seconds(settings: FunctionSettings) -> int:
    """How long a key stays published once superseded: its last tokens' lifetime, the key cache and a margin."""
    return settings.access_token_ttl_seconds + settings.key_cache_seconds + RETIREMENT_MARGIN_SECONDS


def forget_cached_keys() -> None:
    """Drop this process's cached signing key and JWKS, so the next use reads the table."""
    _signing_keys.clear()
    _published.clear()


def _fernet(settings: FunctionSettings) -> Fernet:
    return derived_fernet(settings, _HKDF_SALT, _HKDF_INFO)


def encrypt_private_key(settings: FunctionSettings, private_key: RSAPrivateKey) -> bytes:
    """The private key as PKCS#8 PEM, encrypted for storage."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _fernet(settings).encrypt(pem)


def decrypt_private_key(settings: FunctionSettings, encrypted: bytes) -> RSAPrivateKey:
    """The private key stored as ``encrypted``; ``SigningKeyUnreadable`` under a different secret."""
    try:
        pem = _fernet(settings).decrypt(encrypted)
    except InvalidToken as exc:
        raise SigningKeyUnreadable("a signing key cannot be decrypted: was BERTH_SECRET_KEY changed?") from exc
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, RSAPrivateKey):
        raise SigningKeyUnreadable("a stored signing key is not an RSA key")
    return key


def _new_kid() -> str:
    # Date first, so operators can tell keys' ages apart at a glance; random suffix for uniqueness.
    return time.strftime("%Y%m%d", time.gmtime()) + "-" + secrets.token_hex(6)


async def _new_key_material(settings: FunctionSettings) -> tuple[str, bytes, dict[str, Any]]:
    private_key = await to_thread.run_sync(generate_rsa_key)
    kid = _new_kid()
    return kid, encrypt_private_key(settings, private_key), public_jwk(private_key, kid)


async def current_signing_key(settings: FunctionSettings) -> tuple[str, RSAPrivateKey]:
    """The (kid, private key) that signs access tokens now; creates the first key if there is none.

    Never a key before its ``activates_at``: only the active key is cached, and not past the moment the
    next published key activates.
    """
    cached = _signing_keys.get(settings.database_url)
    read_at = time.monotonic()
    if cached and read_at < cached.valid_until:
        return cached.kid, cached.private_key
    store = get_auth_store(settings)
    active: ActiveSigningKey | None = await store.active_signing_key()
    if active is None:
        kid, encrypted, jwk = await _new_key_material(settings)
        # Several instances may get here at once; the store's lock lets exactly one key in.
        active = await store.create_first_signing_key(kid, encrypted, jwk)
        if active.record.kid == kid:
            log_event(logger, "signing key created", kid=kid)
    record = active.record
    if cached and cached.kid == record.kid:
        private_key = cached.private_key  # unchanged: skip decrypting and re-validating it
    else:
        private_key = decrypt_private_key(settings, record.private_key_encrypted)
    lifetime = float(settings.key_cache_seconds)
    if active.next_activation_in is not None:
        lifetime = min(lifetime, active.next_activation_in)
    # Counted from before the read (not after it and the decryption), so the cache ends by the activation.
    _signing_keys[settings.database_url] = _CachedSigningKey(record.kid, private_key, read_at + lifetime)
    published = _published.get(settings.database_url)
    if published and record.kid not in {jwk.get("kid") for jwk in published.document["keys"]}:
        # Never sign with a key this process would not publish (another instance rotated meanwhile).
        _published.pop(settings.database_url, None)
    return record.kid, private_key


async def rotate_signing_key(settings: FunctionSettings, *, immediately: bool = False) -> str:
    """Publish a new signing key now; it signs from ``settings.key_activation_delay_seconds`` later, or at
    once with ``immediately`` (a compromised key; verifiers that cached the JWKS before this may refuse
    its tokens until they re-read it) or when no key signs yet. Returns its kid.

    The others stop signing when it starts and stay published until the tokens they signed expire.
    """
    kid, encrypted, jwk = await _new_key_material(settings)
    delay = 0 if immediately else settings.key_activation_delay_seconds
    record, pruned = await get_auth_store(settings).add_signing_key(
        kid, encrypted, jwk, retired_key_lifetime_seconds(settings), delay
    )
    forget_cached_keys()
    log_event(
        logger,
        "signing key rotated",
        kid=kid,
        activates_at=record.activates_at.isoformat(),
        immediately=immediately,
        pruned_kids=pruned,
    )
    return kid


async def signing_key_record(settings: FunctionSettings, kid: str) -> SigningKeyRecord | None:
    """The stored key ``kid`` (its ``activates_at`` says when it starts signing), None if there is none."""
    return await get_auth_store(settings).signing_key(kid)


async def prune_signing_keys(settings: FunctionSettings) -> list[str]:
    """Delete keys superseded longer than ``retired_key_lifetime_seconds`` ago; returns their kids."""
    pruned = await get_auth_store(settings).prune_signing_keys(retired_key_lifetime_seconds(settings))
    if pruned:
        forget_cached_keys()
        log_event(logger, "signing keys pruned", pruned_kids=pruned)
    return pruned


async def published_jwks(settings: FunctionSettings, *, max_age: float | None = None) -> dict[str, Any]:
    """The JWKS: ``{"keys": [...]}``, pending, signing and recently superseded keys, newest first.

    ``max_age`` overrides ``settings.key_cache_seconds`` as the oldest cached copy to accept.
    """
    limit = settings.key_cache_seconds if max_age is None else max_age
    cached = _published.get(settings.database_url)
    if cached and time.monotonic() - cached.loaded_at < limit:
        return cached.document
    store = get_auth_store(settings)
    records = await store.published_signing_keys(retired_key_lifetime_seconds(settings))
    if not records:
        # Publish the first key before anyone asks for a token, so verifiers never see an empty set.
        await current_signing_key(settings)
        records = await store.published_signing_keys(retired_key_lifetime_seconds(settings))
    document = {"keys": [record.public_jwk for record in records]}
    _published[settings.database_url] = _CachedJwks(document, time.monotonic())
    return document


class PublishedSigningKeys:
    """A ``shared.tokens.KeySource`` over the key table, for the auth function's own token checks."""

    def __init__(self, settings: FunctionSettings) -> None:
        self._settings = settings

    async def public_keys(self, *, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """The published keys by kid; ``refresh`` re-reads the table unless it was read a moment ago."""
        document = await published_jwks(self._settings, max_age=UNKNOWN_KID_REREAD_SECONDS if refresh else None)
        return {str(jwk["kid"]): jwk for jwk in document["keys"]}
