"""Secrets at rest: Fernet keys derived from ``BERTH_SECRET_KEY`` by HKDF-SHA256, one per purpose.

A container's secret environment is stored as one Fernet token of its JSON object, a TLS certificate's private
key (load-balancer function, opened by lb-runtime) as another with its own derived key, an alert webhook's
signing secret (alerts function, opened by the host worker to sign deliveries) as a third. Only the containers
function (sealing on create) and the host worker (opening to start the container) ever hold the values;
the API answers with their names alone, and nothing here logs them.
"""

from __future__ import annotations

import base64
import json

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.config import AuthSettings

_SECRET_ENV_SALT = b"berth secret env"
_SECRET_ENV_INFO = b"berth secret env encryption v1"


class SecretUnreadable(Exception):
    """A sealed value does not open with this deployment's key (BERTH_SECRET_KEY changed, or corruption)."""


def derived_fernet(settings: AuthSettings, salt: bytes, info: bytes) -> Fernet:
    """A Fernet key for one purpose, derived from the deployment's secret key."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(
        settings.secret_key.get_secret_value().encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def seal_env(settings: AuthSettings, env: dict[str, str]) -> str | None:
    """The environment as one encrypted token; None for an empty one."""
    if not env:
        return None
    token = derived_fernet(settings, _SECRET_ENV_SALT, _SECRET_ENV_INFO).encrypt(json.dumps(env).encode())
    return token.decode()


def open_env(settings: AuthSettings, token: str | None) -> dict[str, str]:
    """The environment sealed in ``token`` (empty for None); SecretUnreadable when it does not open."""
    if not token:
        return {}
    try:
        plain = derived_fernet(settings, _SECRET_ENV_SALT, _SECRET_ENV_INFO).decrypt(token.encode())
    except InvalidToken as exc:
        raise SecretUnreadable("the secret environment cannot be decrypted with this BERTH_SECRET_KEY") from exc
    env = json.loads(plain)
    if not isinstance(env, dict):
        raise SecretUnreadable("the sealed secret environment is not an object")
    return {str(name): str(value) for name, value in env.items()}


_TLS_KEY_SALT = b"berth tls private key"
_TLS_KEY_INFO = b"berth tls private key encryption v1"


def seal_private_key(settings: AuthSettings, key_pem: str) -> str:
    """A certificate's PEM private key as one encrypted token (what the certificates table stores)."""
    return derived_fernet(settings, _TLS_KEY_SALT, _TLS_KEY_INFO).encrypt(key_pem.encode()).decode()


def open_private_key(settings: AuthSettings, token: str) -> str:
    """The PEM private key sealed in ``token``; SecretUnreadable when it does not open."""
    try:
        return derived_fernet(settings, _TLS_KEY_SALT, _TLS_KEY_INFO).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("a certificate's private key cannot be decrypted with this BERTH_SECRET_KEY") from exc


_WEBHOOK_SECRET_SALT = b"berth alert webhook secret"
_WEBHOOK_SECRET_INFO = b"berth alert webhook secret encryption v1"


def seal_webhook_secret(settings: AuthSettings, secret: str) -> str:
    """An alert webhook's signing secret as one encrypted token (the alerts function seals, the worker opens)."""
    return derived_fernet(settings, _WEBHOOK_SECRET_SALT, _WEBHOOK_SECRET_INFO).encrypt(secret.encode()).decode()


def open_webhook_secret(settings: AuthSettings, token: str) -> str:
    """The webhook secret sealed in ``token``; SecretUnreadable when it does not open."""
    try:
        return derived_fernet(settings, _WEBHOOK_SECRET_SALT, _WEBHOOK_SECRET_INFO).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("a webhook secret cannot be decrypted with this BERTH_SECRET_KEY") from exc
