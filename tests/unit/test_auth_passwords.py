"""The password policy and argon2id hashing (pure logic, no services)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from functions.auth import passwords
from functions.auth.errors import WeakPassword
from functions.auth.passwords import check_password_policy, password_problem

EMAIL = "ada.lovelace@example.com"


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short-pw1", "at least 10 characters"),
        ("x" * 129, "at most 128 characters"),
        ("aaaaaaaaaaaa", "one character repeated"),
        ("            ", "one character repeated"),
        ("password123", "most common passwords"),
        ("Password123!", "most common passwords"),
        ("1234567890", "most common passwords"),
        ("QWERTYUIOP", "most common passwords"),
        ("!!iloveyou2024", "most common passwords"),
        ("ada.lovelace", "mostly the email"),
        ("Ada.Lovelace1815", "mostly the email"),
        ("ada.lovelace@example.com", "mostly the email"),
        ("adalovelace!", "mostly the email"),
        ("example.com-ada", "mostly the email"),
    ],
)
def test_policy_refuses_weak_passwords(password: str, problem: str) -> None:
    found = password_problem(password, EMAIL)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery",
        "Tr0ub4dor&3-staple",
        "ada-designs-engines-42",  # contains a piece of the email, but mostly something else
        "x" * 127 + "y",
        "passwordless login is nice",
        "ñandú-corre-rápido",
    ],
)
def test_policy_accepts_reasonable_passwords(password: str) -> None:
    assert password_problem(password, EMAIL) is None


def test_minimum_length_follows_settings() -> None:
    assert password_problem("abcdefghijk9", EMAIL, min_length=14) is not None
    assert password_problem("abcdefghijk9", EMAIL, min_length=10) is None


def test_check_password_policy_raises_a_weak_password_error_naming_the_field() -> None:
    with pytest.raises(WeakPassword) as caught:
        check_password_policy("password123", EMAIL)
    assert caught.value.status == 422
    assert caught.value.code == "weak_password"
    assert caught.value.details == [{"field": "password", "message": "it is one of the most common passwords"}]


async def test_hash_is_argon2id_and_verifies_only_the_right_password() -> None:
    password_hash = await passwords.hash_password("correct horse battery")
    assert password_hash.startswith("$argon2id$")
    assert (await passwords.verify_password(password_hash, "correct horse battery")).matches
    assert not (await passwords.verify_password(password_hash, "correct horse battery!")).matches
    assert not (await passwords.verify_password("not a hash", "correct horse battery")).matches


async def test_hash_made_with_older_parameters_needs_rehash() -> None:
    old_hash = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("correct horse battery")
    check = await passwords.verify_password(old_hash, "correct horse battery")
    assert check.matches and check.needs_rehash
    current = await passwords.verify_password(await passwords.hash_password("x" * 12), "x" * 12)
    assert current.matches and not current.needs_rehash


async def test_dummy_verification_completes_without_matching_anything() -> None:
    await passwords.verify_against_dummy("anything at all")
    assert passwords._dummy_hash is not None and passwords._dummy_hash.startswith("$argon2id$")
