"""Password hashing (argon2id, off the event loop) and the password policy applied at sign-up."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from difflib import SequenceMatcher

from anyio import to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from functions.auth.errors import WeakPassword

MAX_PASSWORD_LENGTH = 128
# A password at least this similar to the email (or its local part) is "mostly the email".
EMAIL_SIMILARITY_LIMIT = 0.75

# Passwords and base words that top every leaked-password list. Small on purpose: the policy rejects
# the obvious, it is not a breach corpus. Words are matched after stripping leading and trailing digits
# and symbols, so "Password123!" counts as "password".
_TOO_COMMON = """
password passw0rd p@ssword p@ssw0rd pass1234 password1 password12 password123 password1234
passwordpassword 1234567890 0123456789 0987654321 9876543210 1234567891 12345678910 123456789a
1q2w3e4r5t 1q2w3e4r5t6y 1qaz2wsx3edc qwertyuiop qwertyuiop123 qwerty1234 qwerty12345 qwerty123456
asdfghjkl asdfghjkl123 zxcvbnm123 zaq12wsx abcdefghij abcdefg123 abc1234567 a1b2c3d4e5
iloveyou iloveyou1 iloveyou123 letmein letmein123 welcome welcome1 welcome123 welcome2024
changeme changeme123 trustno1 administrator admin admin123 admin12345 adminadmin root toor
qwerty monkey dragon master shadow sunshine princess football baseball basketball soccer hockey
superman batman starwars pokemon michael jordan jennifer charlie freedom whatever secret
computer internet trustnoone mustang access flower hello hellohello loveme lovely summer winter
spring autumn login guest default test testing tester samsung google facebook linkedin
chocolate butterfly liverpool arsenal chelsea manchester pakistan bangladesh
"""
COMMON_PASSWORDS = frozenset(_TOO_COMMON.split())


@dataclass(frozen=True)
class PasswordCheck:
    """The outcome of checking a password against a stored hash."""

    matches: bool
    needs_rehash: bool = False


_hasher = PasswordHasher()  # argon2id with argon2-cffi's current recommended parameters
_dummy_hash: str | None = None


def password_problem(password: str, email: str, min_length: int = 10) -> str | None:
    """Why ``password`` is not acceptable for the account ``email``, or None when it is."""
    if len(password) < min_length:
        return f"it must be at least {min_length} characters long"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"it must be at most {MAX_PASSWORD_LENGTH} characters long"
    if len(set(password)) == 1:
        return "it must not be one character repeated"
    if _is_common(password):
        return "it is one of the most common passwords"
    if _is_mostly_email(password, email):
        return "it must not be mostly the email address"
    return None


def check_password_policy(password: str, email: str, min_length: int = 10) -> None:
    """Raise ``WeakPassword`` when ``password`` breaks the policy."""
    problem = password_problem(password, email, min_length)
    if problem:
        raise WeakPassword(problem)


def _is_common(password: str) -> bool:
    lowered = password.lower()
    core = lowered.strip("0123456789!@#$%^&*()-_=+.,;:?~`'\"[]{}<>/\\| ")
    return lowered in COMMON_PASSWORDS or core in COMMON_PASSWORDS


def _is_mostly_email(password: str, email: str) -> bool:
    lowered = password.lower()
    email = email.lower()
    local, _, domain = email.partition("@")
    # Take away the email and its parts; if less than half the password is left, it is mostly email.
    remainder = lowered
    for part in sorted({email, local, domain, domain.split(".")[0]}, key=len, reverse=True):
        if len(part) >= 3:
            remainder = remainder.replace(part, "")
    if len(remainder) * 2 < len(lowered):
        return True
    return any(
        SequenceMatcher(None, lowered, candidate).ratio() >= EMAIL_SIMILARITY_LIMIT
        for candidate in (email, local)
        if candidate
    )


async def hash_password(password: str) -> str:
    """An argon2id hash of ``password``, computed in a worker thread (it takes tens of milliseconds)."""
    return await to_thread.run_sync(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> PasswordCheck:
    """Whether ``password`` matches ``password_hash``, and whether the hash uses outdated parameters."""
    return await to_thread.run_sync(_verify_sync, password_hash, password)


async def verify_against_dummy(password: str) -> None:
    """Spend the time a real verification takes, so an unknown email answers as slowly as a known one."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await hash_password(secrets.token_urlsafe(24))
    await verify_password(_dummy_hash, password)


def _verify_sync(password_hash: str, password: str) -> PasswordCheck:
    try:
        _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return PasswordCheck(matches=False)
    return PasswordCheck(matches=True, needs_rehash=_hasher.check_needs_rehash(password_hash))
