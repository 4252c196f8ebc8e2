"""Secrets at rest: Fernet keys derived from ``BERTH_SECRET_KEY`` by HKDF-SHA256, one per purpose.

A container's secret environment is stored as one Fernet token of its JSON object. Only the containers
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
