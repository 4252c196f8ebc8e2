"""Payload format 2.0: the events the gateway builds and how it reads function responses."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.events import (
    BadFunctionResponse,
    build_event,
    combine_headers,
    decode_response,
    scopes_of,
    stringify_claims,
)

NOW = 1_700_000_000.25


def _event(**overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "method": "POST",
        "raw_path": "/api/images/42%20x/complete",
        "raw_query": "a=1&a=2&b=%20x&c",
        "headers": {"host": "api.example.com:8080", "content-type": "application/json", "user-agent": "tests/1.0"},
        "cookies": ["c=1", "d=2"],
        "body": b'{"name": "x"}',
        "route_key": "POST /api/images/{id}/complete",
        "path_parameters": {"id": "42 x"},
        "source_ip": "127.0.0.9",
        "request_id": "req-1",
        "now": NOW,
    }
    arguments.update(overrides)
    return build_event(**arguments)  # type: ignore[arg-type]


def test_an_event_has_api_gateways_payload_2_0_shape() -> None:
    event = _event()
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /api/images/{id}/complete"
    assert event["rawPath"] == "/api/images/42%20x/complete"
    assert event["rawQueryString"] == "a=1&a=2&b=%20x&c"
    assert event["queryStringParameters"] == {"a": "1,2", "b": " x", "c": ""}
    assert event["pathParameters"] == {"id": "42 x"}
    assert event["cookies"] == ["c=1", "d=2"]
    assert event["body"] == '{"name": "x"}'
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert isinstance(context, dict)
    assert context["http"] == {
        "method": "POST",
        "path": "/api/images/42%20x/complete",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.9",
        "userAgent": "tests/1.0",
    }
    assert context["requestId"] == "req-1"
    assert context["routeKey"] == "POST /api/images/{id}/complete"
    assert context["stage"] == "$default"
    assert context["domainName"] == "api.example.com"
    assert context["domainPrefix"] == "api"
    assert context["time"] == "14/Nov/2023:22:13:20 +0000"
    assert context["timeEpoch"] == 1_700_000_000_250
    assert {"accountId", "apiId"} <= context.keys()
    assert "authorizer" not in context


def test_a_request_without_query_body_cookies_or_parameters_leaves_those_keys_out() -> None:
    event = _event(raw_query="", cookies=[], body=b"", path_parameters={})
    for key in ("queryStringParameters", "cookies", "body", "pathParameters"):
        assert key not in event
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize(
    ("content_type", "body", "encoded"),
    [
        ("application/json", b'{"a": 1}', False),
        ("text/plain; charset=utf-8", "h\u00e9".encode(), False),
        ("application/problem+json", b"{}", False),
        ("application/octet-stream", bytes(range(10)), True),
        (None, b"abc", True),
        ("text/plain", b"\xff\xfe not utf-8", True),
    ],
)
def test_non_text_bodies_are_base64(content_type: str | None, body: bytes, encoded: bool) -> None:
    headers = {"host": "h"} | ({"content-type": content_type} if content_type else {})
    event = _event(headers=headers, body=body)
    assert event["isBase64Encoded"] is encoded
    sent = event["body"]
    assert isinstance(sent, str)
    assert (base64.b64decode(sent) if encoded else sent.encode()) == body


def test_headers_are_lowercased_repeats_comma_joined_and_cookies_split_out() -> None:
    headers, cookies = combine_headers(
        [
            (b"Host", b"h"),
            (b"X-Dup", b"1"),
            (b"x-dup", b"2"),
            (b"Cookie", b"a=1; b=2"),
            (b"cookie", b"c=3"),
        ]
    )
    assert headers == {"host": "h", "x-dup": "1,2"}
    assert cookies == ["a=1", "b=2", "c=3"]


def test_claims_and_scopes_reach_the_function_in_the_authorizer_context() -> None:
    event = _event(claims={"sub": "u1", "exp": "1700000900"}, scopes=["read", "write"])
    context = event["requestContext"]
    assert isinstance(context, dict)
    assert context["authorizer"] == {"jwt": {"claims": {"sub": "u1", "exp": "1700000900"}, "scopes": ["read", "write"]}}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        (1700000000, "1700000000"),
        (1700000000.0, "1700000000"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (["a", "b", 3], "[a b 3]"),
        ({"k": 1}, '{"k":1}'),
        (None, ""),
    ],
)
def test_every_claim_value_becomes_a_string(value: object, text: str) -> None:
    assert stringify_claims({"claim": value}) == {"claim": text}


def test_scopes_come_from_scope_or_scp() -> None:
    assert scopes_of({"scope": "a b"}) == ["a", "b"]
    assert scopes_of({"scp": ["a"]}) == ["a"]
    assert scopes_of({"sub": "x"}) is None


def test_a_structured_response_keeps_status_headers_cookies_and_body() -> None:
    response = decode_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "text/plain", "X-One": 1},
            "multiValueHeaders": {"x-many": ["a", "b"]},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": "made",
            "isBase64Encoded": False,
        }
    )
    assert response.status == 201
    assert response.body == b"made"
    assert response.headers == [
        ("content-type", "text/plain"),
        ("x-one", "1"),
        ("x-many", "a"),
        ("x-many", "b"),
        ("set-cookie", "a=1; Path=/"),
        ("set-cookie", "b=2"),
    ]


def test_a_base64_response_body_is_decoded() -> None:
    payload = bytes(range(256))
    response = decode_response({"statusCode": 200, "body": base64.b64encode(payload).decode(), "isBase64Encoded": True})
    assert response.body == payload


def test_a_result_without_status_code_is_the_json_body_of_a_200() -> None:
    for result in ({"plain": True}, ["a", 1], "text", None):
        response = decode_response(result)
        assert response.status == 200
        assert response.header("content-type") == "application/json"
        assert json.loads(response.body) == result


def test_the_function_cannot_set_hop_by_hop_or_length_headers() -> None:
    response = decode_response(
        {
            "statusCode": 200,
            "headers": {"Content-Length": "999", "Connection": "close", "Transfer-Encoding": "chunked"},
            "body": "x",
        }
    )
    assert response.headers == []


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "200"},
        {"statusCode": 99},
        {"statusCode": True},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"x": {"nested": 1}}},
        {"statusCode": 200, "multiValueHeaders": {"x": "not a list"}},
        {"statusCode": 200, "body": 12},
        {"statusCode": 200, "body": "***", "isBase64Encoded": True},
    ],
)
def test_a_malformed_response_is_a_502(result: dict[str, object]) -> None:
    with pytest.raises(BadFunctionResponse) as caught:
        decode_response(result)
    assert caught.value.status == 502
