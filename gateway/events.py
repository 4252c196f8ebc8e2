"""API Gateway HTTP API payload format 2.0: request events in, Lambda proxy responses out.

``build_event`` makes the event API Gateway would send to a Lambda function for a request;
``decode_response`` reads what the function answered, with API Gateway's rules (a result without a
``statusCode`` is a 200 JSON body; ``isBase64Encoded`` bodies are decoded; ``cookies`` become
``Set-Cookie`` headers). Both are pure functions, so the unit tests pin the format down.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from gateway.spec import LOCAL_ACCOUNT_ID, LOCAL_API_ID
from shared.errors import BerthError
from shared.rate_limit import GATEWAY_COUNTED_KEY

_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "+json",
    "+xml",
    "application/graphql",
)
# Hop-by-hop headers and ones the gateway computes itself: a function cannot set them.
_RESPONSE_HEADERS_OWNED_BY_GATEWAY = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "trailer",
    }
)


class BadFunctionResponse(BerthError):
    status = 502
    code = "bad_function_response"


@dataclass
class GatewayResponse:
    """An HTTP answer as the gateway sends it: status, headers (lower-case names), body bytes."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def set_header(self, name: str, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k != name]
        self.headers.append((name, value))


def is_text_content(content_type: str | None) -> bool:
    if not content_type:
        return False
    lowered = content_type.lower()
    return any(marker in lowered for marker in _TEXT_TYPES)


def stringify_claim(value: Any) -> str:
    """A claim value as API Gateway passes it on: every value a string, lists as ``[a b]``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(stringify_claim(item) for item in value) + "]"
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def stringify_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    return {str(name): stringify_claim(value) for name, value in claims.items()}


def scopes_of(claims: Mapping[str, Any]) -> list[str] | None:
    """The token's scopes (``scope`` as a space-separated string, or ``scp`` as a list), if any."""
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return raw.split() or None
    if isinstance(raw, list):
        return [str(item) for item in raw] or None
    return None


def combine_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], list[str]]:
    """Request headers as API Gateway passes them: lower-case names, repeated ones comma-joined; the
    ``Cookie`` header(s) split into the event's ``cookies`` list instead."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in raw_headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
        elif name in headers:
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    return headers, cookies


def query_parameters(raw_query: str) -> dict[str, str] | None:
    """``queryStringParameters``: decoded, repeated keys comma-joined, None when there is no query."""
    if not raw_query:
        return None
    parameters: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
    return parameters or None


def request_time(epoch_seconds: float) -> str:
    """``requestContext.time`` in API Gateway's format: ``12/Mar/2020:19:03:58 +0000``."""
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch_seconds))


def build_event(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    cookies: list[str],
    body: bytes,
    route_key: str,
    path_parameters: Mapping[str, str],
    source_ip: str,
    request_id: str,
    protocol: str = "HTTP/1.1",
    claims: Mapping[str, str] | None = None,
    scopes: list[str] | None = None,
    now: float | None = None,
    rate_limits_counted: bool = False,
) -> dict[str, Any]:
    """The payload 2.0 event API Gateway sends a Lambda function for this request."""
    now = time.time() if now is None else now
    host = headers.get("host", "localhost")
    domain_name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    request_context: dict[str, Any] = {
        "accountId": LOCAL_ACCOUNT_ID,
        "apiId": LOCAL_API_ID,
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".", 1)[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": request_time(now),
        "timeEpoch": int(now * 1000),
    }
    if claims is not None:
        request_context["authorizer"] = {"jwt": {"claims": dict(claims), "scopes": scopes}}
    if rate_limits_counted:
        # Only the gateway writes the request context: the functions trust this mark and count nothing.
        request_context[GATEWAY_COUNTED_KEY] = True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": dict(headers),
        "requestContext": request_context,
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = list(cookies)
    query = query_parameters(raw_query)
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        if is_text_content(headers.get("content-type")):
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise BadFunctionResponse("The function answered a header value that is not a string.")


def decode_response(result: Any) -> GatewayResponse:
    """The HTTP answer for a function's payload 2.0 result, or a 502 when it is malformed."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # API Gateway's 2.0 inference: anything else is the JSON body of a 200.
        body = json.dumps(result, separators=(",", ":")).encode()
        return GatewayResponse(200, [("content-type", "application/json")], body)
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadFunctionResponse("The function answered an invalid statusCode.")
    headers: list[tuple[str, str]] = []
    raw_headers = result.get("headers") or {}
    multi_value = result.get("multiValueHeaders") or {}
    cookies = result.get("cookies") or []
    if not isinstance(raw_headers, dict) or not isinstance(multi_value, dict) or not isinstance(cookies, list):
        raise BadFunctionResponse("The function answered headers, multiValueHeaders or cookies of the wrong type.")
    for name, value in raw_headers.items():
        headers.append((str(name).lower(), _header_value(value)))
    for name, values in multi_value.items():
        if not isinstance(values, list):
            raise BadFunctionResponse("The function answered a multiValueHeaders entry that is no list.")
        headers.extend((str(name).lower(), _header_value(value)) for value in values)
    headers.extend(("set-cookie", _header_value(cookie)) for cookie in cookies)
    headers = [(name, value) for name, value in headers if name not in _RESPONSE_HEADERS_OWNED_BY_GATEWAY]
    text = result.get("body")
    if text is None:
        payload = b""
    elif not isinstance(text, str):
        raise BadFunctionResponse("The function answered a body that is not a string.")
    elif result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadFunctionResponse("The function answered a body that is not valid base64.") from exc
    else:
        payload = text.encode("utf-8")
    return GatewayResponse(status, headers, payload)
