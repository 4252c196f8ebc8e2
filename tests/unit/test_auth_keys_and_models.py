"""Pure pieces of the auth function: key encryption at rest, request models, the discovery document."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import SecretStr, ValidationError

from functions.auth import service
from functions.auth.models import RefreshRequest, SignUpRequest
from functions.auth.signing_keys import (
    SigningKeyUnreadable,
    _new_kid,
    decrypt_private_key,
    encrypt_private_key,
    retired_key_lifetime_seconds,
)
from shared.config import FunctionSettings
from shared.tokens import generate_rsa_key


@pytest.fixture(scope="module")
def rsa_key() -> RSAPrivateKey:
    return generate_rsa_key()


def test_private_key_round_trips_encrypted_and_never_in_clear(rsa_key: RSAPrivateKey) -> None:
    settings = FunctionSettings(secret_key=SecretStr("one secret for this test"))
    encrypted = encrypt_private_key(settings, rsa_key)
    assert b"PRIVATE KEY" not in encrypted
    restored = decrypt_private_key(settings, encrypted)
    assert restored.private_numbers() == rsa_key.private_numbers()


def test_a_different_secret_cannot_read_the_key(rsa_key: RSAPrivateKey) -> None:
    encrypted = encrypt_private_key(FunctionSettings(secret_key=SecretStr("secret one")), rsa_key)
    with pytest.raises(SigningKeyUnreadable, match="BERTH_SECRET_KEY"):
        decrypt_private_key(FunctionSettings(secret_key=SecretStr("secret two")), encrypted)


def test_kids_are_dated_and_unique() -> None:
    kids = {_new_kid() for _ in range(50)}
    assert len(kids) == 50
    assert all(re.fullmatch(r"\d{8}-[0-9a-f]{12}", kid) for kid in kids)


def test_retired_keys_outlive_the_tokens_they_signed() -> None:
    settings = FunctionSettings(access_token_ttl_seconds=900, key_cache_seconds=30)
    assert retired_key_lifetime_seconds(settings) >= 900 + 30


def test_signup_request_normalises_email_to_lower_case() -> None:
    body = SignUpRequest.model_validate({"email": "Ada.Lovelace@EXAMPLE.com", "password": "p" * 12})
    assert body.email == "ada.lovelace@example.com"


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "ada@example.com"},
        {"password": "correct horse battery"},
        {"email": "not-an-email", "password": "correct horse battery"},
        {"email": "ada@example.com", "password": 12345678901},
        {"email": ["ada@example.com"], "password": "correct horse battery"},
        {"email": "ada@example.com", "password": "correct horse battery", "role": "admin"},
        {"email": "ada@example.com", "password": ""},
        {"email": "ada@example.com", "password": "x" * 1025},
    ],
)
def test_signup_request_refuses_bad_input(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SignUpRequest.model_validate(payload)


def test_refresh_request_is_strict() -> None:
    with pytest.raises(ValidationError):
        RefreshRequest.model_validate({"refresh_token": 42})
    with pytest.raises(ValidationError):
        RefreshRequest.model_validate({"refresh_token": "abc", "extra": 1})


def test_refresh_tokens_are_random_and_stored_as_hashes() -> None:
    first, first_hash = service.new_refresh_token()
    second, _ = service.new_refresh_token()
    assert first != second and len(first) >= 40
    assert first_hash == service.hash_refresh_token(first)
    assert first.encode() not in first_hash


def test_openid_configuration_points_at_the_issuers_jwks() -> None:
    settings = FunctionSettings(jwt_issuer="https://api.example.com/api/auth")
    document = service.openid_configuration(settings)
    assert document["issuer"] == "https://api.example.com/api/auth"
    assert document["jwks_uri"] == "https://api.example.com/api/auth/.well-known/jwks.json"
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
