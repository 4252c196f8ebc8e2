"""CORS per x-amazon-apigateway-cors: preflight answers and headers on ordinary answers."""

from __future__ import annotations

from gateway import cors
from gateway.spec import CorsPolicy

POLICY = CorsPolicy(
    allow_origins=("https://app.example.com",),
    allow_methods=("GET", "POST"),
    allow_headers=("authorization", "content-type"),
    expose_headers=("x-request-id",),
    max_age=600,
)


def test_only_options_with_origin_and_requested_method_is_a_preflight() -> None:
    assert cors.is_preflight("OPTIONS", {"origin": "o", "access-control-request-method": "GET"})
    assert not cors.is_preflight("OPTIONS", {"origin": "o"})
    assert not cors.is_preflight("GET", {"origin": "o", "access-control-request-method": "GET"})


def test_a_preflight_from_an_allowed_origin_gets_the_policy() -> None:
    headers = dict(
        cors.preflight_headers(POLICY, {"origin": "https://app.example.com", "access-control-request-method": "POST"})
    )
    assert headers == {
        "access-control-allow-origin": "https://app.example.com",
        "vary": "Origin",
        "access-control-allow-methods": "GET,POST",
        "access-control-allow-headers": "authorization,content-type",
        "access-control-max-age": "600",
    }


def test_other_origins_get_no_cors_headers() -> None:
    assert (
        cors.preflight_headers(POLICY, {"origin": "https://evil.example", "access-control-request-method": "GET"}) == []
    )
    assert cors.response_headers(POLICY, "https://evil.example") == []
    assert cors.response_headers(POLICY, None) == []


def test_ordinary_answers_to_allowed_origins_expose_headers() -> None:
    assert dict(cors.response_headers(POLICY, "https://app.example.com")) == {
        "access-control-allow-origin": "https://app.example.com",
        "vary": "Origin",
        "access-control-expose-headers": "x-request-id",
    }


def test_a_wildcard_policy_answers_star_and_echoes_requested_headers() -> None:
    policy = CorsPolicy(allow_origins=("*",), allow_headers=("*",))
    headers = dict(
        cors.preflight_headers(
            policy,
            {
                "origin": "https://any.example",
                "access-control-request-method": "GET",
                "access-control-request-headers": "x-custom",
            },
        )
    )
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-headers"] == "x-custom"
    credentialed = CorsPolicy(allow_origins=("*",), allow_credentials=True)
    assert dict(cors.response_headers(credentialed, "https://any.example")) == {
        "access-control-allow-origin": "https://any.example",
        "vary": "Origin",
        "access-control-allow-credentials": "true",
    }
